package hub

import (
	"sort"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herald-rt/herald/presence"
	"github.com/herald-rt/herald/pubsub"
	"github.com/herald-rt/herald/webhook"
)

// appStats are one app's counters. The hot paths only touch atomics; Prometheus reads
// them at scrape time through the hub's collector, so no metric object sits on the
// fan-out path.
type appStats struct {
	open          atomic.Int64
	openedTotal   atomic.Uint64
	msgsIn        atomic.Uint64
	msgsOut       atomic.Uint64
	publishAPI    atomic.Uint64
	publishClient atomic.Uint64
	// channels and subscriptions follow the channel index: channels counts the app's
	// channels in it (index.acquire creates, index.release deletes), subscriptions
	// their members (channel.addLocked, removeLocked). Stats reads them instead of
	// walking a million channels under the shard locks; each changes only where the
	// index or a channel's members change, never on the fan-out path.
	channels      atomic.Int64
	subscriptions atomic.Int64

	mu      sync.Mutex
	closes  map[string]uint64 // by close reason label
	drops   map[string]uint64 // refused or dropped work, by reason
	rejects map[string]uint64 // refused handshakes, by reason
}

func (s *appStats) opened()           { s.openedTotal.Add(1) }
func (s *appStats) received()         { s.msgsIn.Add(1) }
func (s *appStats) sent(n uint64)     { s.msgsOut.Add(n) }
func (s *appStats) closed(l string)   { s.bump(&s.closes, l) }
func (s *appStats) dropped(r string)  { s.bump(&s.drops, r) }
func (s *appStats) rejected(r string) { s.bump(&s.rejects, r) }

func (s *appStats) published(source string) {
	if source == "client" {
		s.publishClient.Add(1)
	} else {
		s.publishAPI.Add(1)
	}
}

func (s *appStats) bump(m *map[string]uint64, label string) {
	s.mu.Lock()
	if *m == nil {
		*m = make(map[string]uint64)
	}
	(*m)[label]++
	s.mu.Unlock()
}

// copyMap copies one of the maps guarded by s.mu (the field is read under the lock:
// bump may replace it).
func (s *appStats) copyMap(m *map[string]uint64) map[string]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]uint64, len(*m))
	for k, v := range *m {
		out[k] = v
	}
	return out
}

// metrics is the hub's Prometheus collector and its node-wide counters.
type metrics struct {
	h          *Hub
	noApp      appStats // closes of connections with an unknown key
	brokerErrs atomic.Uint64
	storeErrs  atomic.Uint64
	badEnv     atomic.Uint64

	reloadsOK, reloadsErr atomic.Uint64
	reloadMu              sync.Mutex
	lastReloadErr         string // guarded by reloadMu

	connections, opened, closed, msgsIn, msgsOut, published, dropped, rejected,
	channels, subscriptions, brokerErrors, storeErrors, badMessages, opsPending,
	brokerUp, brokerSubs, brokerReceived, brokerPublished, brokerReconnects, clusterNodes, reloads,
	tAccepted, tUpgraded, tHandshakeFailed, tHTTP, tBytesIn, tBytesOut, tFramesIn, tFramesOut, tMailboxDropped, tRefused *prometheus.Desc
}

func newMetrics(h *Hub, reg prometheus.Registerer) *metrics {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("herald_"+name, help, labels, nil)
	}
	m := &metrics{
		h:                h,
		connections:      d("connections", "Open WebSocket connections.", "app"),
		opened:           d("connections_opened_total", "WebSocket connections established.", "app"),
		closed:           d("connections_closed_total", "WebSocket connections closed, by reason.", "app", "reason"),
		msgsIn:           d("messages_received_total", "Messages received from clients.", "app"),
		msgsOut:          d("messages_sent_total", "Event deliveries to connections (one per recipient).", "app"),
		published:        d("events_published_total", "Events published, by source (api or client).", "app", "source"),
		dropped:          d("dropped_total", "Work refused or dropped, by reason.", "app", "reason"),
		rejected:         d("handshakes_rejected_total", "WebSocket handshakes refused by the app's rules, by reason.", "app", "reason"),
		channels:         d("channels", "Channels with at least one local subscriber or subscribe in progress.", "app"),
		subscriptions:    d("subscriptions", "Active channel subscriptions.", "app"),
		brokerErrors:     d("broker_errors_total", "Broker calls that failed."),
		storeErrors:      d("store_errors_total", "Presence store calls that failed."),
		badMessages:      d("broker_bad_messages_total", "Broker and control messages dropped because this node cannot read them (another envelope version, or malformed)."),
		opsPending:       d("ops_pending", "Broker and presence jobs queued off the epoll loops."),
		brokerUp:         d("broker_up", "1 while the broker's pub/sub path works, as proven by its last round trip; 0 while it is down."),
		brokerSubs:       d("broker_subscriptions", "Channels this node holds in the broker."),
		brokerReceived:   d("broker_received_messages_total", "Messages the broker delivered to this node (channel and control)."),
		brokerPublished:  d("broker_published_messages_total", "Messages this node published through the broker."),
		brokerReconnects: d("broker_reconnects_total", "Times the broker lost its connection and made a new one."),
		clusterNodes:     d("cluster_nodes", "Live nodes of the cluster, as the presence store last saw them."),
		reloads:          d("config_reloads_total", "Apps reloads (SIGHUP), by result: ok (applied) or error (refused; the running apps were kept).", "result"),
		tAccepted:        d("tcp_accepted_total", "TCP connections accepted on the public port."),
		tUpgraded:        d("websocket_upgrades_total", "WebSocket handshakes completed."),
		tHandshakeFailed: d("handshake_failures_total", "Handshakes answered with an HTTP error or timed out."),
		tHTTP:            d("http_connections_total", "Connections on the public port served as plain HTTP (REST API)."),
		tBytesIn:         d("bytes_received_total", "Bytes read from WebSocket connections."),
		tBytesOut:        d("bytes_sent_total", "Bytes written to WebSocket connections."),
		tFramesIn:        d("frames_received_total", "WebSocket frames received."),
		tFramesOut:       d("frames_sent_total", "WebSocket frames sent."),
		tMailboxDropped:  d("fanout_dropped_total", "Fan-out jobs dropped because a loop's mailbox was full."),
		tRefused:         d("connections_refused_total", "Connections refused before they became WebSockets, by reason (PROXY header, per-IP limits, draining, bad handshakes).", "reason"),
	}
	if reg != nil {
		reg.MustRegister(m)
	}
	return m
}

func (m *metrics) forApp(string) *appStats  { return &appStats{} }
func (m *metrics) closedNoApp(label string) { m.noApp.closed(label) }
func (m *metrics) brokerError()             { m.brokerErrs.Add(1) }
func (m *metrics) storeError()              { m.storeErrs.Add(1) }
func (m *metrics) badEnvelope()             { m.badEnv.Add(1) }
func (m *metrics) reloaded()                { m.reloadsOK.Add(1) }

func (m *metrics) reloadFailed(err error) {
	m.reloadsErr.Add(1)
	m.reloadMu.Lock()
	m.lastReloadErr = err.Error()
	m.reloadMu.Unlock()
}

func (m *metrics) reloadStats() ReloadStats {
	m.reloadMu.Lock()
	defer m.reloadMu.Unlock()
	return ReloadStats{OK: m.reloadsOK.Load(), Errors: m.reloadsErr.Load(), LastError: m.lastReloadErr}
}

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.connections, m.opened, m.closed, m.msgsIn, m.msgsOut, m.published, m.dropped,
		m.rejected, m.channels, m.subscriptions, m.brokerErrors, m.storeErrors, m.badMessages, m.opsPending,
		m.brokerUp, m.brokerSubs, m.brokerReceived, m.brokerPublished, m.brokerReconnects, m.clusterNodes, m.reloads, m.tAccepted, m.tUpgraded,
		m.tHandshakeFailed, m.tHTTP, m.tBytesIn, m.tBytesOut, m.tFramesIn, m.tFramesOut, m.tMailboxDropped, m.tRefused} {
		ch <- d
	}
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	st := m.h.Stats()
	g := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	c := func(d *prometheus.Desc, v uint64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), l...)
	}
	for id, a := range st.Apps {
		g(m.connections, float64(a.Connections), id)
		c(m.opened, a.ConnectionsOpened, id)
		for r, v := range a.Closes {
			c(m.closed, v, id, r)
		}
		c(m.msgsIn, a.MessagesIn, id)
		c(m.msgsOut, a.MessagesOut, id)
		c(m.published, a.PublishedAPI, id, "api")
		c(m.published, a.PublishedClient, id, "client")
		for r, v := range a.Dropped {
			c(m.dropped, v, id, r)
		}
		for r, v := range a.Rejected {
			c(m.rejected, v, id, r)
		}
		g(m.channels, float64(a.Channels), id)
		g(m.subscriptions, float64(a.Subscriptions), id)
	}
	for r, v := range st.Node.UnknownAppCloses {
		c(m.closed, v, "", r)
	}
	c(m.brokerErrors, st.Node.BrokerErrors)
	c(m.storeErrors, st.Node.StoreErrors)
	c(m.badMessages, st.Node.BadMessages)
	g(m.opsPending, float64(st.Node.OpsPending))
	b := st.Node.Broker
	up := 0.0
	if b.Up {
		up = 1
	}
	g(m.brokerUp, up)
	g(m.brokerSubs, float64(b.Subscriptions))
	c(m.brokerReceived, b.Received)
	c(m.brokerPublished, b.Published)
	c(m.brokerReconnects, b.Reconnects)
	g(m.clusterNodes, float64(len(st.Node.Nodes)))
	c(m.reloads, st.Node.ConfigReloads.OK, "ok")
	c(m.reloads, st.Node.ConfigReloads.Errors, "error")
	t := st.Node.Transport
	c(m.tAccepted, t.Accepted)
	c(m.tUpgraded, t.Upgraded)
	c(m.tHandshakeFailed, t.HandshakeFailed)
	c(m.tHTTP, t.HTTPRequests)
	c(m.tBytesIn, t.BytesIn)
	c(m.tBytesOut, t.BytesOut)
	c(m.tFramesIn, t.FramesIn)
	c(m.tFramesOut, t.FramesOut)
	c(m.tMailboxDropped, t.MailboxDropped)
	for r, v := range t.Refused {
		c(m.tRefused, v, r)
	}
}

// Stats is a snapshot of the hub's figures, for the admin /stats endpoint.
type Stats struct {
	Node NodeStats           `json:"node"`
	Apps map[string]AppStats `json:"apps"`
}

// NodeStats are this node's totals.
type NodeStats struct {
	NodeID        uint32 `json:"node_id"`
	Connections   int64  `json:"connections"`
	Channels      int    `json:"channels"`
	Subscriptions int    `json:"subscriptions"`
	MessagesIn    uint64 `json:"messages_in"`
	MessagesOut   uint64 `json:"messages_out"`
	SlowConsumers uint64 `json:"slow_consumer_closes"`
	ErrorCloses   uint64 `json:"error_closes"`
	BrokerErrors  uint64 `json:"broker_errors"`
	StoreErrors   uint64 `json:"store_errors"`
	BadMessages   uint64 `json:"broker_bad_messages"`
	OpsPending    int    `json:"ops_pending"`
	// Broker is the broker's figures (engine, up, subscriptions, traffic, reconnects).
	Broker pubsub.Stats `json:"broker"`
	// Nodes are the live nodes of the cluster, as the presence store last saw them.
	Nodes []presence.Node `json:"nodes"`
	// Webhooks are the webhook sender's figures per app (nil when no app has one).
	Webhooks map[string]webhook.AppStats `json:"webhooks,omitempty"`
	Draining bool                        `json:"draining"`
	// ConfigReloads counts the apps reloads (SIGHUP) since start.
	ConfigReloads    ReloadStats       `json:"config_reloads"`
	UnknownAppCloses map[string]uint64 `json:"unknown_app_closes,omitempty"`
	Transport        TransportStats    `json:"transport"`
}

// ReloadStats count the apps reloads: applied, and refused (the running apps kept).
type ReloadStats struct {
	OK     uint64 `json:"ok"`
	Errors uint64 `json:"errors"`
	// LastError is why the last refused reload was refused; "" if none was.
	LastError string `json:"last_error,omitempty"`
}

// TransportStats mirrors transport.Stats for JSON.
type TransportStats struct {
	Accepted        uint64 `json:"accepted"`
	Upgraded        uint64 `json:"upgraded"`
	HandshakeFailed uint64 `json:"handshake_failed"`
	HTTPRequests    uint64 `json:"http_connections"`
	Open            int64  `json:"open"`
	BytesIn         uint64 `json:"bytes_in"`
	BytesOut        uint64 `json:"bytes_out"`
	FramesIn        uint64 `json:"frames_in"`
	FramesOut       uint64 `json:"frames_out"`
	MailboxDropped  uint64 `json:"mailbox_dropped"`
	// Refused are the connections refused before they became WebSockets, by reason
	// (transport.Refused*: a PROXY header missing or untrusted, a per-IP limit, ...).
	Refused map[string]uint64 `json:"refused"`
	// DrainTotal and DrainClosed: the WebSockets open when the drain began, and how
	// many of them it has started closing (both 0 before a drain).
	DrainTotal  uint64 `json:"drain_total"`
	DrainClosed uint64 `json:"drain_closed"`
}

// AppStats are one app's figures on this node.
type AppStats struct {
	Connections       int64             `json:"connections"`
	ConnectionsOpened uint64            `json:"connections_opened"`
	Channels          int               `json:"channels"`
	Subscriptions     int               `json:"subscriptions"`
	MessagesIn        uint64            `json:"messages_in"`
	MessagesOut       uint64            `json:"messages_out"`
	PublishedAPI      uint64            `json:"published_api"`
	PublishedClient   uint64            `json:"published_client"`
	SlowConsumers     uint64            `json:"slow_consumer_closes"`
	ErrorCloses       uint64            `json:"error_closes"`
	Closes            map[string]uint64 `json:"closes"`
	Dropped           map[string]uint64 `json:"dropped,omitempty"`
	Rejected          map[string]uint64 `json:"rejected,omitempty"`

	// DroppedChannels are the channels with the most deliveries dropped on this
	// node (the delivery_ reasons of Dropped), most first, at most 10 (overload.go).
	DroppedChannels []ChannelDrops `json:"dropped_channels,omitempty"`
}

// errorLabels are the close reasons that mean something went wrong (as opposed to a
// client leaving, a drain or an app's own decision).
var errorLabels = map[string]bool{
	"protocol_error": true, "invalid_payload": true, "message_too_big": true, "unsupported_data": true,
	"pong_timeout": true, "conn_lost": true, "invalid_version": true, "unsupported_protocol": true,
}

// Stats returns a snapshot. It costs O(apps), whatever the number of channels and
// connections: every figure is a counter kept where it changes (the admin server calls
// Stats every second, and the Prometheus collector on every scrape).
func (h *Hub) Stats() Stats {
	apps := h.apps.Load().byID
	st := Stats{Apps: make(map[string]AppStats, len(apps))}
	for id, a := range apps {
		s := a.stats
		as := AppStats{
			Connections:       s.open.Load(),
			ConnectionsOpened: s.openedTotal.Load(),
			MessagesIn:        s.msgsIn.Load(),
			MessagesOut:       s.msgsOut.Load(),
			PublishedAPI:      s.publishAPI.Load(),
			PublishedClient:   s.publishClient.Load(),
			Closes:            s.copyMap(&s.closes),
			Dropped:           s.copyMap(&s.drops),
			DroppedChannels:   a.drops.top(dropTop),
			Rejected:          s.copyMap(&s.rejects),
		}
		as.Channels = int(s.channels.Load())
		as.Subscriptions = int(s.subscriptions.Load())
		as.SlowConsumers = as.Closes[closeSlowConsumer.Label]
		for l, v := range as.Closes {
			if errorLabels[l] {
				as.ErrorCloses += v
			}
		}
		st.Apps[id] = as
		n := &st.Node
		n.Connections += as.Connections
		n.Channels += as.Channels
		n.Subscriptions += as.Subscriptions
		n.MessagesIn += as.MessagesIn
		n.MessagesOut += as.MessagesOut
		n.SlowConsumers += as.SlowConsumers
		n.ErrorCloses += as.ErrorCloses
	}
	st.Node.NodeID = h.nodeID
	st.Node.BrokerErrors = h.metrics.brokerErrs.Load()
	st.Node.StoreErrors = h.metrics.storeErrs.Load()
	st.Node.BadMessages = h.metrics.badEnv.Load()
	st.Node.Broker = h.broker.Stats()
	st.Node.Nodes = h.presence.Nodes()
	if w := h.hooks.Stats().Apps; len(w) > 0 {
		st.Node.Webhooks = w
	}
	st.Node.OpsPending = h.ops.pending()
	st.Node.Draining = h.Draining()
	st.Node.ConfigReloads = h.metrics.reloadStats()
	if u := h.metrics.noApp.copyMap(&h.metrics.noApp.closes); len(u) > 0 {
		st.Node.UnknownAppCloses = u
	}
	t := h.srv.Stats()
	st.Node.Transport = TransportStats{
		Accepted: t.Accepted, Upgraded: t.Upgraded, HandshakeFailed: t.HandshakeFailed, HTTPRequests: t.HTTPRequests,
		Open: t.Open, BytesIn: t.BytesIn, BytesOut: t.BytesOut, FramesIn: t.FramesIn, FramesOut: t.FramesOut,
		MailboxDropped: t.MailboxDropped, Refused: t.Refused, DrainTotal: t.DrainTotal, DrainClosed: t.DrainClosed,
	}
	return st
}

// AppIDs lists the configured app ids, sorted.
func (h *Hub) AppIDs() []string {
	apps := h.apps.Load().byID
	ids := make([]string, 0, len(apps))
	for id := range apps {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}
