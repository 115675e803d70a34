# Secret containers only: their values are added by hand (docs/deploy.md, "First apply"), never stored in Terraform state.
resource "google_secret_manager_secret" "secret" {
  for_each  = local.secrets
  secret_id = each.value
  replication {
    auto {}
  }
  depends_on = [time_sleep.apis_ready]
}

locals {
  secret_bindings = merge([for fn, names in local.secret_readers : { for n in names : "${fn}/${n}" => { fn = fn, secret = n } }]...)
}

resource "google_secret_manager_secret_iam_member" "reader" {
  for_each   = local.secret_bindings
  secret_id  = google_secret_manager_secret.secret[each.value.secret].id
  role       = "roles/secretmanager.secretAccessor"
  member     = "serviceAccount:${google_service_account.fn[each.value.fn].email}"
  depends_on = [time_sleep.accounts_ready] # a fresh account: IAM may not know it yet
}
