variable "name" {
  description = "Prefix for every resource name (functions, role, user pool, client)."
  type        = string
  default     = "gatehouse"

  validation {
    condition     = can(regex("^[a-zA-Z0-9-]{1,40}$", var.name))
    error_message = "name: letters, digits and dashes, at most 40 characters."
  }
}

variable "bundles_dir" {
  description = "The --out directory of `gatehouse build-edge`, holding one <function>.zip per function (deployed as is). It holds secrets: keep it private."
  type        = string
}

variable "domain_name" {
  description = "The public host name browsers use (public_url in the Gatehouse config is https://<domain_name>). Needed up front: the exact callback URL registered at Cognito is built from it."
  type        = string
}

variable "acm_certificate_arn" {
  description = "ARN of an ACM certificate for domain_name, issued in us-east-1 (a CloudFront requirement)."
  type        = string
}

variable "origin_domain_name" {
  description = "Host name of the app behind Gatehouse (an ALB, API Gateway, or any HTTPS server)."
  type        = string
}

variable "origin_path" {
  description = "Path prefix CloudFront adds in front of every request to the origin, e.g. /app. Empty for none."
  type        = string
  default     = ""
}

variable "create_cognito" {
  description = "Create a Cognito user pool, hosted UI domain and app client. False when you bring another OpenID Connect provider."
  type        = bool
  default     = true
}

variable "cognito_domain_prefix" {
  description = "Prefix of the Cognito hosted UI domain: https://<prefix>.auth.<region>.amazoncognito.com. Must be globally unique."
  type        = string
  default     = null
}

variable "lambda_runtime" {
  description = "Node.js runtime of the functions (the bundles target Node 20 and later)."
  type        = string
  default     = "nodejs22.x"
}

variable "price_class" {
  description = "CloudFront price class."
  type        = string
  default     = "PriceClass_100"
}

variable "tags" {
  description = "Tags for every resource that takes them."
  type        = map(string)
  default     = {}
}
