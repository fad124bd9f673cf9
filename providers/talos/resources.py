"""The COSI resources a rotation touches
(docs/talos-model.md: resources a rotation reads): namespace and type of each, shared
by the client (TalosProvider) and the simulator that serves them."""

CONFIG_NAMESPACE = "config"
CONFIG_TYPE = "MachineConfigs.config.talos.dev"
CONFIG_ID = "v1alpha1"  # the active config ("persistent" is the saved one)
SERVICE_NAMESPACE = "runtime"
SERVICE_TYPE = "Services.v1alpha1.talos.dev"
MEMBERS_NAMESPACE = "cluster"
MEMBERS_TYPE = "Members.cluster.talos.dev"
SECRETS_NAMESPACE = "secrets"
#: the certs Talos issues for the API server (KubernetesDynamicCertsController): frontProxy is its
#: --proxy-client-cert-file (sensitive: os:admin)
K8S_DYNAMIC_TYPE = "KubernetesDynamicCerts.secrets.talos.dev"
K8S_DYNAMIC_ID = "k8s-dynamic-certs"
