# Seed 004's deployment: CloudFront in front of an app, Gatehouse's five Lambda@Edge functions, and a
# Cognito user pool as the identity provider. The function bundles are built outside Terraform by
# `gatehouse build-edge` (secrets baked in), which also zips them (<bundles_dir>/<function>.zip, the bundle
# as index.mjs, deterministic); Terraform only deploys the zips, so neither the session secrets nor the
# bundles' content ever reach the state (it keeps the zips' path and hash, not their content).

locals {
  public_url = "https://${var.domain_name}"
  # The core's endpoints (src/core/gatehouse.ts): /oauth2/callback, /oauth2/refresh, /oauth2/sign_out.
  callback_url = "${local.public_url}/oauth2/callback"

  viewer_functions = toset(["check-auth", "parse-auth", "refresh-auth", "sign-out"])
  functions        = setunion(local.viewer_functions, ["http-headers"])
  # Written by `gatehouse build-edge` next to the bundles: each holds its bundle as index.mjs.
  zips = { for fn in local.functions : fn => "${var.bundles_dir}/${fn}.zip" }

  # Paths answered by a function of their own (viewer-request), every other path by check-auth.
  endpoint_functions = {
    "/oauth2/callback" = "parse-auth"
    "/oauth2/refresh"  = "refresh-auth"
    "/oauth2/sign_out" = "sign-out"
  }
  all_methods = ["GET", "HEAD", "OPTIONS", "PUT", "POST", "PATCH", "DELETE"]
}

data "aws_region" "current" {}

# ---- Cognito: user pool, hosted UI, app client -------------------------------------------------------

resource "aws_cognito_user_pool" "this" {
  count = var.create_cognito ? 1 : 0

  name                     = var.name
  username_attributes      = ["email"]
  auto_verified_attributes = ["email"]
  mfa_configuration        = "OPTIONAL"
  deletion_protection      = "ACTIVE"

  software_token_mfa_configuration {
    enabled = true
  }

  admin_create_user_config {
    allow_admin_create_user_only = true
  }

  password_policy {
    minimum_length                   = 12
    require_lowercase                = true
    require_uppercase                = true
    require_numbers                  = true
    require_symbols                  = false
    temporary_password_validity_days = 3
  }

  account_recovery_setting {
    recovery_mechanism {
      name     = "verified_email"
      priority = 1
    }
  }

  tags = var.tags
}

resource "aws_cognito_user_pool_domain" "this" {
  count = var.create_cognito ? 1 : 0

  domain       = var.cognito_domain_prefix
  user_pool_id = aws_cognito_user_pool.this[0].id

  lifecycle {
    precondition {
      condition     = var.cognito_domain_prefix != null
      error_message = "cognito_domain_prefix is required when create_cognito is true."
    }
  }
}

resource "aws_cognito_user_pool_client" "this" {
  count = var.create_cognito ? 1 : 0

  name         = var.name
  user_pool_id = aws_cognito_user_pool.this[0].id

  # A confidential client: the secret is baked into parse-auth, refresh-auth and sign-out. The AWS
  # provider keeps it in the state (no way around that with this resource): treat the state as secret.
  generate_secret = true

  allowed_oauth_flows_user_pool_client = true
  allowed_oauth_flows                  = ["code"]
  allowed_oauth_scopes                 = ["openid", "email", "profile"]
  supported_identity_providers         = ["COGNITO"]
  # RFC 9700 §4.1.3: exactly one callback URL, matched exactly.
  callback_urls        = [local.callback_url]
  default_redirect_uri = local.callback_url
  logout_urls          = ["${local.public_url}/"]

  explicit_auth_flows           = ["ALLOW_REFRESH_TOKEN_AUTH"]
  prevent_user_existence_errors = "ENABLED"
  enable_token_revocation       = true

  access_token_validity  = 60
  id_token_validity      = 60
  refresh_token_validity = 30
  token_validity_units {
    access_token  = "minutes"
    id_token      = "minutes"
    refresh_token = "days"
  }
}

# ---- Lambda@Edge: one function per bundle -------------------------------------------------------------

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com", "edgelambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "edge" {
  provider = aws.us_east_1

  name               = "${var.name}-edge"
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = var.tags
}

# Logs only: the functions call nothing in AWS (Cognito is reached over its public OIDC endpoints).
resource "aws_iam_role_policy_attachment" "logs" {
  provider = aws.us_east_1

  role       = aws_iam_role.edge.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
}

resource "aws_lambda_function" "edge" {
  provider = aws.us_east_1
  for_each = local.functions

  function_name = "${var.name}-${each.key}"
  description   = "Gatehouse ${each.key} (Lambda@Edge)"
  role          = aws_iam_role.edge.arn
  runtime       = var.lambda_runtime
  # build-edge's zips hold the bundle as index.mjs (ESM, `export const handler`); they are deterministic,
  # so the hash, and the function, change only when the bundle does.
  handler          = "index.handler"
  filename         = local.zips[each.key]
  source_code_hash = fileexists(local.zips[each.key]) ? filebase64sha256(local.zips[each.key]) : null
  # Lambda@Edge runs a published version, never $LATEST.
  publish = true
  # Viewer triggers: at most 128 MB and 5 s. http-headers (origin-response) needs no more.
  memory_size = 128
  timeout     = 5

  tags = var.tags

  lifecycle {
    precondition {
      condition     = fileexists(local.zips[each.key])
      error_message = "${local.zips[each.key]} is missing: run `gatehouse build-edge --config <file> --out ${var.bundles_dir}` first."
    }
  }
}

# ---- CloudFront ---------------------------------------------------------------------------------------

# Responses depend on who asks: nothing is cached at the edge.
data "aws_cloudfront_cache_policy" "disabled" {
  name = "Managed-CachingDisabled"
}

# Every viewer header (among them the X-Auth-Request-* identity headers check-auth sets), cookie and
# query string reaches the origin; Host is the origin's own.
data "aws_cloudfront_origin_request_policy" "all_but_host" {
  name = "Managed-AllViewerExceptHostHeader"
}

resource "aws_cloudfront_distribution" "this" {
  enabled         = true
  is_ipv6_enabled = true
  http_version    = "http2and3"
  comment         = "${var.name}: Gatehouse at the edge"
  aliases         = [var.domain_name]
  price_class     = var.price_class

  origin {
    origin_id   = "app"
    domain_name = var.origin_domain_name
    origin_path = var.origin_path

    custom_origin_config {
      http_port              = 80
      https_port             = 443
      origin_protocol_policy = "https-only"
      origin_ssl_protocols   = ["TLSv1.2"]
    }
  }

  default_cache_behavior {
    target_origin_id         = "app"
    viewer_protocol_policy   = "redirect-to-https"
    allowed_methods          = local.all_methods
    cached_methods           = ["GET", "HEAD"]
    compress                 = true
    cache_policy_id          = data.aws_cloudfront_cache_policy.disabled.id
    origin_request_policy_id = data.aws_cloudfront_origin_request_policy.all_but_host.id

    lambda_function_association {
      event_type   = "viewer-request"
      lambda_arn   = aws_lambda_function.edge["check-auth"].qualified_arn
      include_body = false
    }

    lambda_function_association {
      event_type = "origin-response"
      lambda_arn = aws_lambda_function.edge["http-headers"].qualified_arn
    }
  }

  dynamic "ordered_cache_behavior" {
    for_each = local.endpoint_functions
    content {
      path_pattern             = ordered_cache_behavior.key
      target_origin_id         = "app"
      viewer_protocol_policy   = "redirect-to-https"
      allowed_methods          = local.all_methods
      cached_methods           = ["GET", "HEAD"]
      cache_policy_id          = data.aws_cloudfront_cache_policy.disabled.id
      origin_request_policy_id = data.aws_cloudfront_origin_request_policy.all_but_host.id

      # The function answers every request itself: the origin is never reached on these paths.
      lambda_function_association {
        event_type   = "viewer-request"
        lambda_arn   = aws_lambda_function.edge[ordered_cache_behavior.value].qualified_arn
        include_body = false
      }
    }
  }

  restrictions {
    geo_restriction {
      restriction_type = "none"
    }
  }

  viewer_certificate {
    acm_certificate_arn      = var.acm_certificate_arn
    ssl_support_method       = "sni-only"
    minimum_protocol_version = "TLSv1.2_2021"
  }

  tags = var.tags
}
