"""The Kubernetes checks of a rotation, one module per subject; each is a blocking call over
verified TLS that the engine runs in a worker thread:

- `nodes`: every API server answers with the phase's admin cert and lists every node Ready
  (`KubernetesChecker`), /readyz, the kubeconfig connection of the Kubernetes state backend;
- `aggregator`: front-proxy requests authenticate, the extension-apiserver-authentication
  ConfigMap carries the accepted CAs, the API servers' own front-proxy client certs;
- `serviceaccount`: TokenRequest's signing key, tokens signed with each accepted key, the legacy
  token Secrets a key's removal breaks;
- `encryption`: the Secret rewrite, and etcd read directly for the key each Secret is stored under;
- `api`: the plain HTTPS calls and the retry loop (`until`) the last three share.
"""
