package loadgen

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Publisher triggers events through the Pusher HTTP API (POST /apps/{id}/events) with
// signed requests over keep-alive connections. It is safe for concurrent use.
type Publisher struct {
	base, path       string
	batchPath        string
	key, secret      string
	client           *http.Client
	now              func() time.Time
	ownsIdleConnPool bool
}

// PublisherConfig configures a Publisher.
type PublisherConfig struct {
	// BaseURL is the server, e.g. "http://127.0.0.1:6001". Required.
	BaseURL string
	// AppID, Key and Secret are the app's credentials. Required.
	AppID, Key, Secret string
	// Client sends the requests. Default: a client of its own with keep-alive
	// connections (up to MaxConns idle ones) and a 10 s timeout.
	Client *http.Client
	// MaxConns bounds the idle keep-alive connections of the default client.
	// Default 16.
	MaxConns int
}

// NewPublisher returns a Publisher for cfg.
func NewPublisher(cfg PublisherConfig) (*Publisher, error) {
	if cfg.BaseURL == "" || cfg.AppID == "" || cfg.Key == "" || cfg.Secret == "" {
		return nil, fmt.Errorf("%w: publisher needs BaseURL, AppID, Key and Secret", ErrConfig)
	}
	p := &Publisher{
		base:      cfg.BaseURL,
		path:      "/apps/" + cfg.AppID + "/events",
		batchPath: "/apps/" + cfg.AppID + "/batch_events",
		key:       cfg.Key,
		secret:    cfg.Secret,
		client:    cfg.Client,
		now:       time.Now,
	}
	if p.client == nil {
		n := cfg.MaxConns
		if n <= 0 {
			n = 16
		}
		p.client = &http.Client{
			Timeout: 10 * time.Second,
			Transport: &http.Transport{
				MaxIdleConns:        n,
				MaxIdleConnsPerHost: n,
				IdleConnTimeout:     90 * time.Second,
			},
		}
		p.ownsIdleConnPool = true
	}
	return p, nil
}

// Publish sends one event with data (a string, sent as the JSON string "data") to
// channel and returns when the server has answered 2xx.
func (p *Publisher) Publish(ctx context.Context, channel, event string, data []byte) error {
	body := make([]byte, 0, 64+len(channel)+len(event)+len(data))
	body = append(body, `{"name":`...)
	body = appendJSONString(body, event)
	body = append(body, `,"channel":`...)
	body = appendJSONString(body, channel)
	body = append(body, `,"data":`...)
	body = appendJSONString(body, string(data))
	body = append(body, '}')
	return p.Post(ctx, body)
}

// BatchEvent is one event of PublishBatch.
type BatchEvent struct {
	Channel, Name string
	Data          []byte // sent as a JSON string
}

// PublishBatch sends events in one request to /apps/{id}/batch_events (Pusher
// accepts up to 10 per request) and returns when the server has answered 2xx.
func (p *Publisher) PublishBatch(ctx context.Context, events []BatchEvent) error {
	body := make([]byte, 0, 16+len(events)*128)
	body = append(body, `{"batch":[`...)
	for i, ev := range events {
		if i > 0 {
			body = append(body, ',')
		}
		body = append(body, `{"name":`...)
		body = appendJSONString(body, ev.Name)
		body = append(body, `,"channel":`...)
		body = appendJSONString(body, ev.Channel)
		body = append(body, `,"data":`...)
		body = appendJSONString(body, string(ev.Data))
		body = append(body, '}')
	}
	body = append(body, "]}"...)
	return p.post(ctx, p.batchPath, body)
}

// Post sends a ready-made JSON body to /apps/{id}/events.
func (p *Publisher) Post(ctx context.Context, body []byte) error {
	return p.post(ctx, p.path, body)
}

func (p *Publisher) post(ctx context.Context, path string, body []byte) error {
	q := SignQuery(http.MethodPost, path, p.key, p.secret, body, p.now().Unix(), nil)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.base+path+"?"+q, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("loadgen: publish: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("loadgen: publish: %w", err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	// Drain what is left (bounded) so that the connection is kept alive.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%w: %s: %s", ErrPublish, resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// Close releases the idle connections of the default client.
func (p *Publisher) Close() {
	if p.ownsIdleConnPool {
		p.client.CloseIdleConnections()
	}
}
