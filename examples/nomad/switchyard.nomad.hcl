# Switchyard and its edge Envoys as a Nomad job: two Switchyard replicas
# and one edge Envoy per client node of the "edge" node pool. The policies
# come from a Consul KV prefix rendered by a template (any artifact or
# volume works as well). Adjust the binaries' paths, the datacenter and the
# certificates; docs/operations.md explains each part.
#   nomad job run switchyard.nomad.hcl
job "switchyard" {
  datacenters = ["dc1"]
  type        = "service"

  group "control-plane" {
    count = 2 # replicas: Envoys fail over between them

    spread {
      attribute = "${node.unique.id}"
    }

    network {
      port "xds" { static = 18000 }
      port "admin" { static = 19100 }
    }

    service {
      name = "switchyard"
      port = "xds"
      check {
        type     = "http"
        port     = "admin"
        path     = "/readyz"
        interval = "5s"
        timeout  = "2s"
      }
    }

    task "switchyard" {
      driver = "exec"

      config {
        command = "/usr/local/bin/switchyard"
        args = [
          "serve",
          "--consul-address", "${attr.unique.network.ip-address}:8500",
          "--policy", "${NOMAD_TASK_DIR}/policies",
          "--xds-address", "0.0.0.0:18000",
          "--admin-address", "0.0.0.0:19100",
          "--admin-token-file", "${NOMAD_SECRETS_DIR}/admin-token",
          "--xds-cert-file", "${NOMAD_SECRETS_DIR}/xds.crt",
          "--xds-key-file", "${NOMAD_SECRETS_DIR}/xds.key",
          "--xds-client-ca-file", "${NOMAD_SECRETS_DIR}/envoy-ca.crt",
          "--xds-client-cert-groups",
          "--log-format", "json",
        ]
      }

      template {
        data        = "{{ range ls \"switchyard/policies\" }}{{ .Value }}\n---\n{{ end }}"
        destination = "local/policies/policies.yaml"
        change_mode = "noop" # Switchyard watches the file itself
      }

      resources {
        cpu    = 500
        memory = 512
      }

      kill_timeout = "30s"
    }
  }

  group "edge" {
    count = 2

    network {
      port "http" { static = 8080 }
      port "metrics" { static = 9102 }
    }

    task "envoy" {
      driver = "exec"

      config {
        command = "/bin/sh"
        args = ["-c", "/usr/local/bin/switchyard bootstrap --node-id ${NOMAD_ALLOC_ID} --group edge --xds-address switchyard.service.consul:18000 --xds-server-name switchyard.internal --xds-ca-file ${NOMAD_SECRETS_DIR}/switchyard-ca.crt --xds-cert-file ${NOMAD_SECRETS_DIR}/edge.crt --xds-key-file ${NOMAD_SECRETS_DIR}/edge.key --admin-address 127.0.0.1:9901 --prometheus-address 0.0.0.0:9102 > ${NOMAD_TASK_DIR}/envoy.yaml && exec /usr/local/bin/envoy -c ${NOMAD_TASK_DIR}/envoy.yaml --drain-time-s 20"]
      }

      resources {
        cpu    = 1000
        memory = 1024
      }

      kill_timeout = "30s"
    }
  }
}
