output "bigquery_dataset" {
  description = "Dataset of the history and the reporting tables."
  value       = "${var.project_id}.${local.dataset}"
}

output "form_url" {
  description = "The add_tag form (behind IAP); point the domain's DNS A record at form_ip."
  value       = "https://${var.form.domain}/"
}

output "form_ip" {
  description = "IP address of the form's load balancer."
  value       = google_compute_global_address.form.address
}

output "looker_studio_link" {
  description = "Creates the Looker Studio report on the reporting tables (Linking API)."
  value = join("&", concat(
    ["https://lookerstudio.google.com/reporting/create?c.mode=edit", "r.reportName=Progresso+dos+alunos"],
    flatten([for i, t in ["report_class_week", "report_student_week", "report_product_week", "report_movements", "report_run_health", "report_tutor_outcomes", "report_risk_timeline"] : [
      "ds.ds${i}.connector=bigQuery", "ds.ds${i}.type=TABLE", "ds.ds${i}.projectId=${var.project_id}",
      "ds.ds${i}.datasetId=${local.dataset}", "ds.ds${i}.tableId=${t}", "ds.ds${i}.datasourceName=${t}",
    ]]),
  ))
}

output "slack_url" {
  description = "Request URL of the Slack slash command /turma."
  value       = google_cloudfunctions2_function.fn["slack_command"].service_config[0].uri
}

output "slack_actions_url" {
  description = "Interactivity request URL of the Slack app (the buttons under the tutors' digest)."
  value       = google_cloudfunctions2_function.fn["slack_actions"].service_config[0].uri
}

output "functions_settings" {
  description = "The functions' settings (their environment, no secret) for the operator's commands: terraform output -json functions_settings > settings.json, then python -m progress_monitor <command> --settings settings.json."
  value       = merge(local.common_env, local.slack_env, local.form_env)
}
