package webhook

import (
	"errors"
	"slices"
	"testing"
	"testing/synctest"
	"time"
)

// Reload keeps the queue of a hook whose spec is unchanged and signs its next request
// with the new secret; a changed hook is replaced (the old one delivers what it held),
// a removed app's hook delivers what it held and stops, a new app's hook starts.
func TestReload(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newFakeNet()
		kept, keptURL := net.add(t, "kept.test", "secret2", always(200))
		changed, changedURL := net.add(t, "changed.test", "secret", always(200))
		gone, goneURL := net.add(t, "gone.test", "secret", always(200))
		added, addedURL := net.add(t, "added.test", "s3", always(200))
		s := mustNew(t, Config{Client: net.client(), BatchWait: time.Minute, Apps: []App{
			{ID: "1", Key: "key", Secret: "secret", Hooks: []Hook{
				{URL: changedURL, EventTypes: []string{ChannelOccupied}},
				{URL: keptURL, Headers: map[string]string{"X-A": "1"}},
			}},
			{ID: "2", Key: "k2", Secret: "secret", Hooks: []Hook{{URL: goneURL}}},
		}})
		defer closeNow(t, s)
		s.Send("1", ev("before"))
		s.Send("2", ev("before"))

		err := s.Reload([]App{
			{ID: "1", Key: "key-new", Secret: "secret2", Hooks: []Hook{
				{URL: keptURL, Headers: map[string]string{"X-A": "1"}}, // moved to first: still the same hook
				{URL: changedURL, EventTypes: []string{ChannelOccupied, ChannelVacated}},
			}},
			{ID: "3", Key: "k3", Secret: "s3", Hooks: []Hook{{URL: addedURL}}},
		})
		if err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		// The retired hooks sent what they held at once; the kept one still waits
		// out its batch.
		if got := changed.delivered(); !slices.Equal(got, []string{"before"}) {
			t.Errorf("changed hook's old version delivered %v", got)
		}
		if got := gone.delivered(); !slices.Equal(got, []string{"before"}) {
			t.Errorf("removed app's hook delivered %v", got)
		}
		if n := len(kept.requests()); n != 0 {
			t.Errorf("kept hook sent %d requests before its batch was due", n)
		}
		s.Send("1", ev("after"))
		s.Send("1", Event{Name: ChannelVacated, Channel: "vacated"})
		s.Send("2", ev("lost")) // app 2 is gone
		s.Send("3", ev("new"))
		if s.Enabled("2", ChannelOccupied) || !s.Enabled("3", ChannelOccupied) || !s.Enabled("1", ChannelVacated) {
			t.Error("Enabled does not follow the reload")
		}
		time.Sleep(time.Minute)
		synctest.Wait()

		reqs := kept.requests()
		if len(reqs) != 1 || !slices.Equal(reqs[0].names(), []string{"before", "after", "vacated"}) {
			t.Fatalf("kept hook: %d requests, first %v; want one with its queue kept", len(reqs), reqs)
		}
		if r := reqs[0]; !r.sigOK || r.header.Get("X-Pusher-Key") != "key-new" || r.header.Get("X-A") != "1" {
			t.Errorf("kept hook's request: signature ok %v, key %q, X-A %q; want the new key and secret",
				r.sigOK, r.header.Get("X-Pusher-Key"), r.header.Get("X-A"))
		}
		if got := changed.delivered(); !slices.Equal(got, []string{"before", "after", "vacated"}) {
			t.Errorf("changed hook delivered %v", got)
		}
		if got := gone.delivered(); !slices.Equal(got, []string{"before"}) {
			t.Errorf("removed app's hook delivered %v", got)
		}
		if got := added.delivered(); !slices.Equal(got, []string{"new"}) {
			t.Errorf("added app's hook delivered %v", got)
		}
		st := s.Stats() // app 1: before (old changed hook), then 3 on each of its two hooks
		if _, ok := st.Apps["2"]; ok || st.Apps["1"].Sent != 6 || st.Apps["1"].Hooks != 2 || st.Apps["3"].Sent != 1 {
			t.Errorf("stats %+v: app 1's counters go on, app 2's are gone", st)
		}
	})
}

// A bad set is refused whole and the running one keeps working; Reload after Close
// is refused.
func TestReloadRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newFakeNet()
		ep, url := net.add(t, "a.test", "secret", always(200))
		s := mustNew(t, Config{Apps: oneApp(url), Client: net.client()})
		for _, bad := range [][]App{
			{{ID: "1", Key: "key", Secret: "secret", Hooks: []Hook{{URL: url}}}, {ID: "2", Key: "k", Secret: "s", Hooks: []Hook{{URL: "ftp://x/"}}}},
			{{ID: "1", Key: "key", Secret: "secret", Hooks: []Hook{{URL: url}}}, {ID: "1"}},
			{{ID: "1", Hooks: []Hook{{URL: url}}}},
		} {
			if err := s.Reload(bad); err == nil {
				t.Errorf("Reload(%+v) accepted", bad)
			}
		}
		s.Send("1", ev("still"))
		time.Sleep(time.Second)
		synctest.Wait()
		if got := ep.delivered(); !slices.Equal(got, []string{"still"}) {
			t.Errorf("delivered %v after refused reloads", got)
		}
		closeNow(t, s)
		if err := s.Reload(oneApp(url)); !errors.Is(err, ErrClosed) {
			t.Errorf("Reload after Close: %v", err)
		}
	})
}

// A Sender made without hooks takes some from a Reload, and Close waits for them.
func TestReloadFromNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newFakeNet()
		ep, url := net.add(t, "a.test", "secret", always(200))
		s := mustNew(t, Config{Client: net.client(), BatchWait: time.Hour})
		if err := s.Reload(oneApp(url)); err != nil {
			t.Fatal(err)
		}
		s.Send("1", ev("a"))
		closeNow(t, s)
		if got := ep.delivered(); !slices.Equal(got, []string{"a"}) {
			t.Errorf("delivered %v", got)
		}
	})
}
