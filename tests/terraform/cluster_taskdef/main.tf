# Resources berth supported before services: a cluster and a task definition.
# tests/python/test_terraform.py applies this and requires an empty plan afterwards.

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

  tags = {
    team = "berth"
  }
}

resource "aws_ecs_task_definition" "web" {
  family                   = "${var.name}-web"
  requires_compatibilities = ["EC2"]
  network_mode             = "bridge"
  container_definitions = jsonencode([
    {
      name      = "web"
      image     = "berth-test/http:latest"
      cpu       = 64
      memory    = 32
      essential = true
      portMappings = [
        { containerPort = 8080, hostPort = 0, protocol = "tcp" }
      ]
      environment = [
        { name = "GREETING", value = "hello" }
      ]
      healthCheck = {
        command     = ["CMD-SHELL", "wget -q -O- http://127.0.0.1:8080/health || exit 1"]
        interval    = 5
        timeout     = 2
        retries     = 3
        startPeriod = 0
      }
    }
  ])

  tags = {
    app = "web"
  }
}
