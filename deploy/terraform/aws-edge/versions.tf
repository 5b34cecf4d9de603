terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40.0"
      # Lambda@Edge functions, their IAM role and the CloudFront certificate live in us-east-1.
      configuration_aliases = [aws.us_east_1]
    }
  }
}
