# An ECS service on berth through the unmodified Terraform AWS provider.
# Driven by tests/python/test_terraform.py (apply, plan must be empty, change
# desired_count, apply, destroy); the endpoint and names come from variables.

terraform {
  required_providers {
    aws = {
      source = "hashicorp/aws"
    }
  }
}

variable "endpoint" {
  type = string
}

variable "name" {
  type = string
}

variable "desired_count" {
  type    = number
  default = 2
}

provider "aws" {
  region     = "us-east-1"
  access_key = "x"
  secret_key = "x"

  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  skip_region_validation      = true

  endpoints {
    ecs = var.endpoint
  }
}

resource "aws_ecs_cluster" "this" {
  name = var.name
}

resource "aws_ecs_task_definition" "sleeper" {
  family                   = var.name
  requires_compatibilities = ["EC2"]
  network_mode             = "bridge"
  container_definitions = jsonencode([
    {
      name        = "main"
      image       = "berth-test/busybox:latest"
      cpu         = 16
      memory      = 32
      essential   = true
      command     = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
      stopTimeout = 2
    }
  ])
}

resource "aws_ecs_service" "this" {
  name                  = var.name
  cluster               = aws_ecs_cluster.this.id
  task_definition       = aws_ecs_task_definition.sleeper.arn
  desired_count         = var.desired_count
  launch_type           = "EC2"
  wait_for_steady_state = true

  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  ordered_placement_strategy {
    type  = "binpack"
    field = "memory"
  }

  propagate_tags          = "SERVICE"
  enable_ecs_managed_tags = true

  tags = {
    team = "berth"
  }

  timeouts {
    create = "3m"
    update = "3m"
    delete = "3m"
  }
}

output "service_id" {
  value = aws_ecs_service.this.id
}

output "cluster_arn" {
  value = aws_ecs_cluster.this.arn
}
