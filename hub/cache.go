package hub

import (
	"encoding/json"
	"sync"
	"time"
)

// cacheStore keeps the last event of each cache channel, on this node. Expired entries
// are dropped when read and swept every few hundred writes, so it is bounded by the
// number of cache channels written within one TTL.
type cacheStore struct {
	mu     sync.Mutex
	m      map[string]cacheEntry
	writes int
}

type cacheEntry struct {
	frame   []byte          // the event's WebSocket frame, sent as is to new subscribers
	data    json.RawMessage // the event's data, for the HTTP API's info=cache
	expires time.Time
}

func newCacheStore() *cacheStore { return &cacheStore{m: make(map[string]cacheEntry)} }

func (s *cacheStore) set(key string, frame []byte, data json.RawMessage, expires time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[key] = cacheEntry{frame: frame, data: data, expires: expires}
	s.writes++
	if s.writes%512 == 0 {
		now := time.Now()
		for k, e := range s.m {
			if now.After(e.expires) {
				delete(s.m, k)
			}
		}
	}
}

func (s *cacheStore) get(key string, now time.Time) (cacheEntry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[key]
	if !ok {
		return cacheEntry{}, false
	}
	if now.After(e.expires) {
		delete(s.m, key)
		return cacheEntry{}, false
	}
	return e, true
}

func (s *cacheStore) frame(key string, now time.Time) ([]byte, bool) {
	e, ok := s.get(key, now)
	return e.frame, ok
}
