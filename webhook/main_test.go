package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine behind: every Sender's
// goroutines and its HTTP client's connections must be gone after Close.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// request is one attempt an endpoint saw.
type request struct {
	at     time.Time
	method string
	url    string
	header http.Header
	body   []byte
	timeMS int64
	events []Event
	sigOK  bool // X-Pusher-Signature verified against the raw body, independently of Sign
}

func (r request) names() []string {
	out := make([]string, len(r.events))
	for i, e := range r.events {
		out[i] = e.Channel
	}
	return out
}

// parseRequest decodes a webhook body and checks its signature with its own HMAC.
func parseRequest(t testing.TB, method, url string, header http.Header, body []byte, secret string) request {
	var b struct {
		TimeMS int64   `json:"time_ms"`
		Events []Event `json:"events"`
	}
	if err := json.Unmarshal(body, &b); err != nil {
		t.Errorf("body %s: %v", body, err)
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	want := hex.EncodeToString(mac.Sum(nil))
	return request{
		at: time.Now(), method: method, url: url, header: header.Clone(), body: body,
		timeMS: b.TimeMS, events: b.Events,
		sigOK: hmac.Equal([]byte(header.Get("X-Pusher-Signature")), []byte(want)),
	}
}

// endpoint is a fake webhook receiver. answer gives the status of the n-th attempt
// (from 0); 0 means never answer: the attempt waits until the request is cancelled.
type endpoint struct {
	t      testing.TB
	secret string
	answer func(n int) int

	mu      sync.Mutex
	reqs    []request
	arrived chan struct{} // a token per attempt, if not nil
}

func (e *endpoint) requests() []request {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]request(nil), e.reqs...)
}

// delivered lists the channels of the events of the attempts answered 2xx.
func (e *endpoint) delivered() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for n, r := range e.reqs {
		if s := e.answer(n); s >= 200 && s < 300 {
			out = append(out, r.names()...)
		}
	}
	return out
}

// fakeNet is an in-memory network of endpoints by host, a fake HTTP transport: with
// it, synctest's clock governs timeouts and backoff (a real socket read is not
// durably blocking, so a bubble's clock would never move while one is pending).
type fakeNet struct {
	mu  sync.Mutex
	eps map[string]*endpoint
}

func newFakeNet() *fakeNet { return &fakeNet{eps: make(map[string]*endpoint)} }

// add registers an endpoint at http://host/hook.
func (f *fakeNet) add(t testing.TB, host, secret string, answer func(n int) int) (*endpoint, string) {
	e := &endpoint{t: t, secret: secret, answer: answer}
	f.mu.Lock()
	f.eps[host] = e
	f.mu.Unlock()
	return e, "http://" + host + "/hook"
}

func (f *fakeNet) client() *http.Client { return &http.Client{Transport: f} }

func (f *fakeNet) RoundTrip(r *http.Request) (*http.Response, error) {
	f.mu.Lock()
	e := f.eps[r.URL.Host]
	f.mu.Unlock()
	body, err := io.ReadAll(r.Body)
	r.Body.Close()
	if err != nil {
		return nil, err
	}
	req := parseRequest(e.t, r.Method, r.URL.String(), r.Header, body, e.secret)
	e.mu.Lock()
	n := len(e.reqs)
	e.reqs = append(e.reqs, req)
	e.mu.Unlock()
	if e.arrived != nil {
		e.arrived <- struct{}{}
	}
	status := e.answer(n)
	if status == 0 {
		<-r.Context().Done()
		return nil, r.Context().Err()
	}
	return &http.Response{
		StatusCode: status, Status: http.StatusText(status), Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{}, Body: io.NopCloser(bytes.NewReader(nil)), Request: r,
	}, nil
}

func always(status int) func(int) int { return func(int) int { return status } }

// mustNew builds a Sender; the test closes it.
func mustNew(t testing.TB, cfg Config) *Sender {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// closeNow closes s and fails on an error; the 10 s only turn a hang into a failure.
func closeNow(t testing.TB, s *Sender) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// ev is an event named by its channel, for order checks.
func ev(channel string) Event { return Event{Name: ChannelOccupied, Channel: channel} }
