// Package deploy holds Herald's deployment files and the tests that keep them true.
//
// The files are for operators, each commented where it is set:
//
//	haproxy/haproxy.cfg    HAProxy in mode tcp: TLS on :443, plain on :80, leastconn,
//	                       PROXY v2 to the nodes, health checks on /readyz
//	nginx/herald.conf      the same with nginx's stream module
//	k8s/                   Deployment, Service (LoadBalancer, externalTrafficPolicy
//	                       Local), PodDisruptionBudget, ConfigMap (apps.json), a
//	                       single Redis; kubectl apply -k deploy/k8s
//	systemd/herald.service a node under systemd
//	sysctl.conf            the kernel settings a 500,000-connection node needs
//	apps.example.json      every per-app option (--config)
//	../Dockerfile          the image (static binary on distroless, non-root)
//
// deploy/grafana and deploy/prometheus are maintained beside these and not checked
// here.
//
// # What the tests check
//
// The tests parse every file and check what an operator would otherwise find out in
// production: that every herald flag a file uses exists (against the built binary's
// --help) and that herald starts with the arguments of the Deployment, the systemd
// unit and the Dockerfile (and rereads its apps on the unit's ExecReload, SIGHUP);
// that ports, probes and Services agree; that the drain
// timings nest (preStop sleep + --shutdown-timeout < terminationGracePeriodSeconds,
// --drain-window < --shutdown-timeout < systemd's TimeoutStopSec); that HAProxy's
// configuration passes haproxy -c and sends PROXY v2 and checks /readyz; that the
// nginx file has the expected directives (nginx itself is not needed); that the
// sysctls allow the file limits that the unit and HAProxy ask for; and that the
// Dockerfile builds a static binary on a non-root distroless image.
// TestEveryFileIsChecked fails when a file is added here without a test.
//
// # Entry points
//
// The package's only code is ParseHAProxy and HAProxyConfig.Localize, which turn
// haproxy.cfg into a configuration that runs on loopback with test ports and a test
// certificate, unprivileged and in the foreground, directive for directive the same
// otherwise. e2e/haproxy_test.go runs a real HAProxy from it, so the end-to-end tests
// go through the shipped configuration rather than a copy of it. The functions are
// pure (no I/O) and safe for concurrent use on distinct values.
package deploy
