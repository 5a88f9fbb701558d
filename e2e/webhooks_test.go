package e2e

import (
	"net"
	"strconv"
	"testing"
	"time"
)

// The webhook instances: herald POSTs its webhooks to a receiver that the JS file runs
// (lib.mjs webhookReceiver) on a loopback port the Go side picks, writes into apps.json
// and passes on as E2E_WEBHOOK_PORT. The receiver checks every request with the `pusher`
// SDK's webhook() helper and with an HMAC of its own.

// hook is one entry of an app's "webhooks" in apps.json (hub.App.Webhooks).
type hook struct {
	URL        string            `json:"url"`
	EventTypes []string          `json:"event_types,omitempty"`
	Headers    map[string]string `json:"headers,omitempty"`
	Filter     *hookFilter       `json:"filter,omitempty"`
}

type hookFilter struct {
	StartsWith string `json:"channel_name_starts_with,omitempty"`
	EndsWith   string `json:"channel_name_ends_with,omitempty"`
}

// authTimeout is the authorized-connections app's user_authentication_timeout.
const authTimeout = 2 * time.Second

// webhookApps are the apps of the one-node instance; recv is the receiver's port, hang
// the port of an endpoint that accepts connections and never answers.
//
//	hooks   (APP_*)        every event type to /all; member events of presence-…-vip
//	                       channels to /vip with a header of its own; client events
//	retry   (APP_RETRY_*)  every type to /retry, which the file makes fail; client
//	                       events also to the endpoint that never answers
//	counts  (APP_COUNTS_*) subscription_count; its webhook to /counts
//	auth    (APP_AUTH_*)   user_authentication_timeout 2s, no webhooks
func webhookApps(recv, hang string) (hooks, retry, counts, auth app) {
	url := func(port, path string) string { return "http://127.0.0.1:" + port + path }
	hooks = app{ID: "21", Key: "e2e-key-21", Secret: "e2e-secret-21", ClientEvents: true, MaxClientEventsPerSecond: 100,
		Webhooks: []hook{
			{URL: url(recv, "/all")},
			{URL: url(recv, "/vip"), EventTypes: []string{"member_added", "member_removed"},
				Headers: map[string]string{"X-E2E-Hook": "vip"},
				Filter:  &hookFilter{StartsWith: "presence-", EndsWith: "-vip"}},
		}}
	retry = app{ID: "22", Key: "e2e-key-22", Secret: "e2e-secret-22", ClientEvents: true,
		Webhooks: []hook{
			{URL: url(recv, "/retry")},
			{URL: url(hang, "/hang"), EventTypes: []string{"client_event"}},
		}}
	counts = app{ID: "23", Key: "e2e-key-23", Secret: "e2e-secret-23", SubscriptionCount: true,
		Webhooks: []hook{{URL: url(recv, "/counts"), EventTypes: []string{"subscription_count"}}}}
	auth = app{ID: "24", Key: "e2e-key-24", Secret: "e2e-secret-24", UserAuthenticationTimeout: authTimeout.String()}
	return hooks, retry, counts, auth
}

// TestWebhooks runs webhooks.test.mjs against one herald whose apps have webhooks,
// subscription counts and an authentication timeout.
func TestWebhooks(t *testing.T) {
	t.Parallel()
	recv, hang := reservePort(t), reservePort(t)
	hooks, retry, counts, auth := webhookApps(recv.port, hang.port)
	h := startHerald(t, "webhooks", "--config", writeApps(t, hooks, retry, counts, auth))
	env := appEnv("APP", hooks)
	env = append(env, appEnv("APP_RETRY", retry)...)
	env = append(env, appEnv("APP_COUNTS", counts)...)
	env = append(env, appEnv("APP_AUTH", auth)...)
	env = append(env, "E2E_WEBHOOK_PORT="+recv.port, "E2E_HANG_PORT="+hang.port,
		"E2E_AUTH_TIMEOUT_MS="+strconv.FormatInt(authTimeout.Milliseconds(), 10))
	recv.release()
	hang.release()
	t.Run("webhooks", func(t *testing.T) { runNode(t, []*herald{h}, webhooksFile, env...) })
	h.stop(t)
}

// TestClusterWebhooks runs cluster_webhooks.test.mjs against three nodes on Redis that
// share one app with client events, subscription counts and a webhook to /all.
func TestClusterWebhooks(t *testing.T) {
	t.Parallel()
	recv := reservePort(t)
	a := app{ID: "31", Key: "e2e-key-31", Secret: "e2e-secret-31", ClientEvents: true, SubscriptionCount: true,
		Webhooks: []hook{{URL: "http://127.0.0.1:" + recv.port + "/all"}}}
	c := startCluster(t, "cw", a)
	env := append(c.env(), "E2E_WEBHOOK_PORT="+recv.port)
	recv.release()
	t.Run("cluster_webhooks", func(t *testing.T) { runNode(t, c.nodes, clusterWebhooksFile, env...) })
	c.stop(t)
}

// reservedPort holds a free loopback port until the JS file is about to listen on it,
// so that the herald processes started in between (freePort) cannot be given it.
type reservedPort struct {
	ln   net.Listener
	port string
}

func reservePort(t *testing.T) *reservedPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return &reservedPort{ln: ln, port: strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)}
}

// release frees the port for the JS file. Nothing sends to it before: herald posts a
// webhook only for what the file's clients do.
func (p *reservedPort) release() { p.ln.Close() }
