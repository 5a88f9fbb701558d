package hub

import (
	"fmt"
	"reflect"

	"github.com/herald-rt/herald/transport"
	"github.com/herald-rt/herald/webhook"
)

// Reloading the apps (cmd/herald: SIGHUP rereads --config) while connections stay up.
//
// The apps served are one immutable appSet behind Hub.apps, which Reload replaces
// whole; each app's config is one immutable App behind appState.cfg, which Reload
// replaces whole too. Loops and API handlers read both with an atomic load and no
// lock, so a reload adds nothing to the fan-out path and nothing per connection: a
// client keeps its *appState, and reads the config through it when it needs it.
//
// What a reload changes, and when it shows:
//
//   - An added app (or an id that comes back) is served from the moment the set is
//     published: new connections with its key, API calls with its id.
//   - A removed app is out of the set: new connections get 4001, API calls 404. A
//     newly disabled app stays in it: 4003 and 403. Either way its open connections
//     are closed with 4003 (closeApp).
//   - A changed key, secret or limit applies to what comes next: the signature of the
//     next subscription, sign-in or API request, on connections already open too; the
//     next connection, event, subscription or join counted against a limit. What a
//     limit already let through stays (a connection over a lowered max_connections, a
//     user over a lowered max_presence_members). A connection's user-authentication
//     deadline is the one of its app when it opened; an app whose timeout is turned
//     off forgets its waiting connections.
//   - Webhooks go to the webhook sender's Reload: unchanged hooks keep their queues.
//
// The identity of an app is its id: its channels, users, counters and webhook
// figures stay with the id across reloads, whatever its key becomes.

// validateApps checks a whole set: at least one app, each valid, no id or key twice.
func validateApps(apps []App) error {
	if len(apps) == 0 {
		return ErrNoApps
	}
	ids := make(map[string]bool, len(apps))
	keys := make(map[string]bool, len(apps))
	for i := range apps {
		a := &apps[i]
		if err := a.Validate(); err != nil {
			return err
		}
		if ids[a.ID] || keys[a.Key] {
			return fmt.Errorf("%w: %s", ErrDuplicateApp, a.ID)
		}
		ids[a.ID], keys[a.Key] = true, true
	}
	return nil
}

// webhookApps are the apps with webhooks, as package webhook takes them.
func webhookApps(apps []App) []webhook.App {
	var out []webhook.App
	for _, a := range apps {
		if len(a.Webhooks) > 0 {
			out = append(out, webhook.App{ID: a.ID, Key: a.Key, Secret: a.Secret, Hooks: a.Webhooks})
		}
	}
	return out
}

// ReloadResult says what a reload changed, by app id.
type ReloadResult struct {
	Added, Removed, Disabled, Enabled, Changed []string
	// Closing is how many connections of removed and disabled apps are being closed
	// with 4003 (see closeApp).
	Closing int
}

// Reload replaces the apps served with those load returns. load runs under the
// reload lock (one reload at a time); its error, or a set that New would refuse, is a
// refused reload: nothing changes, the error is logged, counted
// (herald_config_reloads_total{result="error"}) and returned. Otherwise the whole set
// is applied at once, as the package doc and reload.go say, logged and counted
// (result="ok"). After Shutdown began, Reload returns ErrClosed and counts nothing.
func (h *Hub) Reload(load func() ([]App, error)) (ReloadResult, error) {
	h.reloadMu.Lock()
	defer h.reloadMu.Unlock()
	if h.closed.Load() {
		return ReloadResult{}, ErrClosed
	}
	apps, err := load()
	if err == nil {
		err = validateApps(apps)
	}
	if err == nil {
		// Last of the checks, first of the changes: the sender validates the hooks
		// again and applies them only if all are valid.
		if herr := h.hooks.Reload(webhookApps(apps)); herr != nil {
			err = fmt.Errorf("hub: webhooks: %w", herr)
		}
	}
	if err != nil {
		h.metrics.reloadFailed(err)
		h.log.Error("config reload refused: the running apps are kept", "err", err)
		return ReloadResult{}, err
	}
	res := h.applyApps(apps)
	h.metrics.reloaded()
	h.log.Info("config reloaded", "apps", len(apps), "added", res.Added, "removed", res.Removed,
		"disabled", res.Disabled, "enabled", res.Enabled, "changed", res.Changed,
		"closing_connections", res.Closing)
	return res, nil
}

// applyApps publishes a valid set (h.reloadMu held). The configs of the apps that stay
// are replaced before the new set is published, so that whoever finds an app in the
// set finds its new config; the connections of the apps that went off are closed last.
func (h *Hub) applyApps(apps []App) ReloadResult {
	var res ReloadResult
	old := h.apps.Load()
	wasOn := make(map[*appState]bool, len(old.byID))
	for _, a := range old.byID {
		wasOn[a] = !a.conf().Disabled
	}
	set := &appSet{byKey: make(map[string]*appState, len(apps)), byID: make(map[string]*appState, len(apps))}
	for _, cfg := range apps {
		a := h.known[cfg.ID]
		switch {
		case a == nil:
			a = newAppState(cfg, h.metrics.forApp(cfg.ID))
			h.known[cfg.ID] = a
			res.Added = append(res.Added, cfg.ID)
		case old.byID[cfg.ID] == nil:
			a.setConf(cfg)
			res.Added = append(res.Added, cfg.ID)
		default:
			// Changed lists what changed besides being enabled or disabled.
			was, now := *a.conf(), cfg.withDefaults()
			was.Disabled, now.Disabled = false, false
			if !reflect.DeepEqual(was, now) {
				res.Changed = append(res.Changed, cfg.ID)
			}
			a.setConf(cfg)
		}
		set.byKey[cfg.Key], set.byID[cfg.ID] = a, a
	}
	for id, a := range old.byID {
		if set.byID[id] != nil {
			continue
		}
		// Out of the set, and disabled for those that still hold it: its open
		// connections, and whatever they were doing, see it off.
		off := *a.conf()
		off.Disabled = true
		a.cfg.Store(&off)
		res.Removed = append(res.Removed, id)
	}
	h.apps.Store(set)
	for a, on := range wasOn {
		nowOn := !a.conf().Disabled
		switch {
		case on && !nowOn:
			if set.byID[a.id] != nil {
				res.Disabled = append(res.Disabled, a.id)
			}
			h.closeApp(a)
			res.Closing += int(a.stats.open.Load())
		case !on && nowOn:
			res.Enabled = append(res.Enabled, a.id)
		}
	}
	return res
}

// closeApp has every open connection of an app that a reload removed or disabled
// closed with 4003: the transport visits each connection on its loop (the hub keeps no
// list of an app's connections: that would cost memory on every connection for the
// sake of a rare event). Each close looks at the app again on the connection's loop,
// so that an app enabled again in between keeps its connections.
func (h *Hub) closeApp(a *appState) {
	a.auth.reset() // their deadlines no longer matter
	h.srv.Each(func(tc *transport.Conn) {
		if c, ok := tc.Value().(*client); ok && c.app == a {
			h.closeIfOff(c)
		}
	})
}

// closeIfOff closes c with 4003 if its app is disabled or removed, and reports whether
// it did (loop).
func (h *Hub) closeIfOff(c *client) bool {
	if c.app == nil || !c.app.conf().Disabled || c.conn.Closed() || c.rejected() != nil {
		return false
	}
	h.refuse(c, closeAppDisabled) // counted as a close with reason app_disabled
	return true
}
