output "public_url" {
  description = "public_url for the Gatehouse config."
  value       = local.public_url
}

output "callback_url" {
  description = "The one redirect URI registered at the provider."
  value       = local.callback_url
}

output "distribution_id" {
  value = aws_cloudfront_distribution.this.id
}

output "distribution_domain_name" {
  description = "Point domain_name here (a CNAME, or a Route 53 alias)."
  value       = aws_cloudfront_distribution.this.domain_name
}

output "cognito_issuer" {
  description = "provider.issuer for the Gatehouse config."
  value       = var.create_cognito ? "https://cognito-idp.${data.aws_region.current.name}.amazonaws.com/${aws_cognito_user_pool.this[0].id}" : null
}

output "cognito_client_id" {
  description = "provider.client_id for the Gatehouse config."
  value       = var.create_cognito ? aws_cognito_user_pool_client.this[0].id : null
}

output "cognito_client_secret" {
  description = "The app client's secret: give it to build-edge through an environment variable, never a file in git."
  value       = var.create_cognito ? aws_cognito_user_pool_client.this[0].client_secret : null
  sensitive   = true
}

output "cognito_logout_url" {
  description = "provider.end_session_url for the Gatehouse config (Cognito's hosted UI logout)."
  value       = var.create_cognito ? "https://${aws_cognito_user_pool_domain.this[0].domain}.auth.${data.aws_region.current.name}.amazoncognito.com/logout" : null
}

output "function_arns" {
  description = "Qualified ARNs (published versions) of the five functions."
  value       = { for k, f in aws_lambda_function.edge : k => f.qualified_arn }
}
