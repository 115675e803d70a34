# The add_tag form behind Google identity: HTTPS load balancer -> IAP -> serverless NEG -> function.
# The code verifies the IAP assertion (audience = this backend service) and the staff allow-list again.
resource "google_compute_region_network_endpoint_group" "form" {
  name                  = "${var.prefix}-form-neg"
  region                = var.region
  network_endpoint_type = "SERVERLESS"
  cloud_run {
    # By name, not by reference: the function's environment needs this backend's id (IAP audience).
    service = local.function_names["add_tag"]
  }
  depends_on = [time_sleep.apis_ready]
}

resource "google_compute_backend_service" "form" {
  name                  = "${var.prefix}-form"
  protocol              = "HTTPS"
  load_balancing_scheme = "EXTERNAL_MANAGED"
  backend {
    group = google_compute_region_network_endpoint_group.form.id
  }
  iap {
    enabled = true
  }
  log_config {
    enable = true
  }
}

resource "google_iap_web_backend_service_iam_member" "staff" {
  for_each            = toset(var.form.iap_members)
  web_backend_service = google_compute_backend_service.form.name
  role                = "roles/iap.httpsResourceAccessor"
  member              = each.value
}

# IAP's service agent invokes the function on behalf of the signed-in staff member.
resource "google_cloud_run_service_iam_member" "iap_invoker" {
  location = var.region
  service  = google_cloudfunctions2_function.fn["add_tag"].name
  role     = "roles/run.invoker"
  member   = local.iap_agent
}

# Slack cannot present Google credentials: both Slack endpoints (the slash command and the buttons' interactivity
# URL) are public and every request must carry Slack's v0 HMAC signature, verified in code (timestamp window,
# constant-time comparison). Where the organisation enforces domain-restricted sharing
# (iam.allowedPolicyMemberDomains, the default for new organisations) this grant is refused unless the project
# overrides that list constraint: var.org_policy_override does it below, or an administrator by hand
# (docs/deploy.md, "First apply", step 2).
resource "google_cloud_run_service_iam_member" "slack_public" {
  # checkov:skip=CKV_GCP_102: Slack cannot send Google credentials; every request is verified by its HMAC signature in code
  for_each   = toset(["slack_command", "slack_actions"])
  location   = var.region
  service    = google_cloudfunctions2_function.fn[each.key].name
  role       = "roles/run.invoker"
  member     = "allUsers"
  depends_on = [google_org_policy_policy.public_members]
}

# A project-level override of the list constraint iam.allowedPolicyMemberDomains (allow all values), so
# allUsers may be granted here. Needs an Organization Policy Administrator (roles/orgpolicy.policyAdmin on the
# organisation) to run the apply; off by default.
resource "google_org_policy_policy" "public_members" {
  count  = var.org_policy_override ? 1 : 0
  name   = "projects/${var.project_id}/policies/iam.allowedPolicyMemberDomains"
  parent = "projects/${var.project_id}"
  spec {
    rules {
      allow_all = "TRUE"
    }
  }
  depends_on = [time_sleep.apis_ready]
}

resource "google_compute_managed_ssl_certificate" "form" {
  name = "${var.prefix}-form-cert"
  managed {
    domains = [var.form.domain]
  }
  depends_on = [time_sleep.apis_ready]
}

resource "google_compute_url_map" "form" {
  name            = "${var.prefix}-form"
  default_service = google_compute_backend_service.form.id
}

resource "google_compute_target_https_proxy" "form" {
  name             = "${var.prefix}-form"
  url_map          = google_compute_url_map.form.id
  ssl_certificates = [google_compute_managed_ssl_certificate.form.id]
  ssl_policy       = google_compute_ssl_policy.form.id
}

resource "google_compute_ssl_policy" "form" {
  name            = "${var.prefix}-form-tls"
  profile         = "RESTRICTED"
  min_tls_version = "TLS_1_2"
  depends_on      = [time_sleep.apis_ready]
}

resource "google_compute_global_address" "form" {
  name       = "${var.prefix}-form"
  depends_on = [time_sleep.apis_ready]
}

resource "google_compute_global_forwarding_rule" "form" {
  name                  = "${var.prefix}-form"
  target                = google_compute_target_https_proxy.form.id
  port_range            = "443"
  ip_address            = google_compute_global_address.form.address
  load_balancing_scheme = "EXTERNAL_MANAGED"
}

# Plain HTTP on the same address answers only with a redirect to HTTPS (301, the path and query kept): a
# browser that types the bare domain reaches the form, and nothing is ever served unencrypted.
resource "google_compute_url_map" "form_http" {
  name = "${var.prefix}-form-http"
  default_url_redirect {
    https_redirect         = true
    redirect_response_code = "MOVED_PERMANENTLY_DEFAULT"
    strip_query            = false
  }
  depends_on = [time_sleep.apis_ready]
}

resource "google_compute_target_http_proxy" "form_http" {
  name    = "${var.prefix}-form-http"
  url_map = google_compute_url_map.form_http.id
}

resource "google_compute_global_forwarding_rule" "form_http" {
  name                  = "${var.prefix}-form-http"
  target                = google_compute_target_http_proxy.form_http.id
  port_range            = "80"
  ip_address            = google_compute_global_address.form.address
  load_balancing_scheme = "EXTERNAL_MANAGED"
}
