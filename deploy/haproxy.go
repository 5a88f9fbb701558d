package deploy

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
)

// ErrHAProxy wraps every error of ParseHAProxy and Localize.
var ErrHAProxy = errors.New("deploy: haproxy.cfg")

// HAProxyConfig is an HAProxy configuration file as a list of sections of directives:
// enough to check deploy/haproxy/haproxy.cfg and rewrite it for another place.
// Comments and blank lines are not kept.
type HAProxyConfig struct {
	Sections []*HAProxySection
}

// HAProxySection is one section: global, defaults, frontend, backend, listen, …
type HAProxySection struct {
	Kind       string // "global", "defaults", "frontend", "backend", …
	Name       string // "" for global and an unnamed defaults
	Directives []HAProxyDirective
}

// HAProxyDirective is one line of a section, split into words as HAProxy splits it:
// "option httpchk GET /readyz" is Words ["option", "httpchk", "GET", "/readyz"].
type HAProxyDirective struct {
	Words []string
	Line  int // in the parsed file, 1-based
}

// sectionKinds are the keywords that start a section.
var sectionKinds = []string{"global", "defaults", "frontend", "backend", "listen", "resolvers",
	"userlist", "peers", "mailers", "program", "http-errors", "ring", "cache"}

// ParseHAProxy splits an HAProxy configuration into sections and directives. A line
// that starts with a section keyword opens a section; every other non-empty line
// belongs to the section above it. Words are separated by blanks; double and single
// quotes group (and are removed), a backslash escapes the next character, and an
// unquoted # starts a comment.
func ParseHAProxy(src []byte) (*HAProxyConfig, error) {
	c := &HAProxyConfig{}
	var cur *HAProxySection
	for i, line := range strings.Split(string(src), "\n") {
		words, err := splitHAProxyLine(line)
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", ErrHAProxy, i+1, err)
		}
		if len(words) == 0 {
			continue
		}
		if slices.Contains(sectionKinds, words[0]) {
			cur = &HAProxySection{Kind: words[0]}
			if len(words) > 1 {
				cur.Name = words[1]
			}
			c.Sections = append(c.Sections, cur)
			continue
		}
		if cur == nil {
			return nil, fmt.Errorf("%w: line %d: %q outside any section", ErrHAProxy, i+1, words[0])
		}
		cur.Directives = append(cur.Directives, HAProxyDirective{Words: words, Line: i + 1})
	}
	return c, nil
}

func splitHAProxyLine(line string) ([]string, error) {
	var words []string
	var w strings.Builder
	inWord := false
	var quote byte
	for i := 0; i < len(line); i++ {
		ch := line[i]
		switch {
		case quote != 0:
			if ch == quote {
				quote = 0
			} else if ch == '\\' && quote == '"' && i+1 < len(line) {
				i++
				w.WriteByte(line[i])
			} else {
				w.WriteByte(ch)
			}
		case ch == '"' || ch == '\'':
			quote, inWord = ch, true
		case ch == '\\' && i+1 < len(line):
			i++
			w.WriteByte(line[i])
			inWord = true
		case ch == '#':
			i = len(line)
		case ch == ' ' || ch == '\t' || ch == '\r':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteByte(ch)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, errors.New("unterminated quote")
	}
	if inWord {
		words = append(words, w.String())
	}
	return words, nil
}

// String renders the configuration: sections with their directives indented, words
// that need it quoted.
func (c *HAProxyConfig) String() string {
	var b strings.Builder
	for i, s := range c.Sections {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(s.Kind)
		if s.Name != "" {
			b.WriteString(" " + quoteHAProxy(s.Name))
		}
		b.WriteByte('\n')
		for _, d := range s.Directives {
			b.WriteString("    ")
			for j, w := range d.Words {
				if j > 0 {
					b.WriteByte(' ')
				}
				b.WriteString(quoteHAProxy(w))
			}
			b.WriteByte('\n')
		}
	}
	return b.String()
}

func quoteHAProxy(w string) string {
	if w != "" && !strings.ContainsAny(w, " \t#'\"\\") {
		return w
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(w) + `"`
}

// SectionsOf returns the sections of a kind, in order.
func (c *HAProxyConfig) SectionsOf(kind string) []*HAProxySection {
	var out []*HAProxySection
	for _, s := range c.Sections {
		if s.Kind == kind {
			out = append(out, s)
		}
	}
	return out
}

// Section returns the section of that kind and name, or nil.
func (c *HAProxyConfig) Section(kind, name string) *HAProxySection {
	for _, s := range c.Sections {
		if s.Kind == kind && s.Name == name {
			return s
		}
	}
	return nil
}

// Find returns the section's directives whose first words are prefix.
func (s *HAProxySection) Find(prefix ...string) []HAProxyDirective {
	var out []HAProxyDirective
	for _, d := range s.Directives {
		if len(d.Words) >= len(prefix) && slices.Equal(d.Words[:len(prefix)], prefix) {
			out = append(out, d)
		}
	}
	return out
}

// Value returns the word after prefix in the last directive that starts with prefix
// (the one HAProxy applies), and whether there is one.
func (s *HAProxySection) Value(prefix ...string) (string, bool) {
	ds := s.Find(prefix...)
	if len(ds) == 0 || len(ds[len(ds)-1].Words) <= len(prefix) {
		return "", false
	}
	return ds[len(ds)-1].Words[len(prefix)], true
}

// TLSFrontend is the frontend that terminates TLS (a bind with "ssl"), or nil.
func (c *HAProxyConfig) TLSFrontend() *HAProxySection {
	return c.frontend(func(s *HAProxySection, d HAProxyDirective) bool { return slices.Contains(d.Words, "ssl") })
}

// PlainFrontend is the mode tcp frontend without TLS, or nil.
func (c *HAProxyConfig) PlainFrontend() *HAProxySection {
	return c.frontend(func(s *HAProxySection, d HAProxyDirective) bool {
		return !slices.Contains(d.Words, "ssl") && c.mode(s) == "tcp"
	})
}

// frontend is the first frontend with a bind line that pick accepts.
func (c *HAProxyConfig) frontend(pick func(*HAProxySection, HAProxyDirective) bool) *HAProxySection {
	for _, s := range c.SectionsOf("frontend") {
		for _, d := range s.Find("bind") {
			if pick(s, d) {
				return s
			}
		}
	}
	return nil
}

// NodesBackend is the backend with server lines (the herald nodes), or nil when
// there is none or more than one.
func (c *HAProxyConfig) NodesBackend() *HAProxySection {
	var be *HAProxySection
	for _, s := range c.SectionsOf("backend") {
		if len(s.Find("server")) > 0 {
			if be != nil {
				return nil
			}
			be = s
		}
	}
	return be
}

// HAProxySite is where a localized haproxy.cfg runs. Empty fields keep what the file
// says.
type HAProxySite struct {
	// TLSBind and PlainBind replace the address of the frontend that terminates TLS
	// (its bind has "ssl") and of the plain one (mode tcp, no "ssl"): "127.0.0.1:8443".
	TLSBind, PlainBind string
	// StatsBind replaces the address of the mode http frontend (stats, Prometheus).
	StatsBind string
	// Cert replaces the TLS frontend's "crt" file: a PEM with the chain and its key.
	Cert string
	// StatsSocket replaces the runtime API socket's path.
	StatsSocket string
	// Nodes replace the backend's server lines: one per node, with the options of the
	// file's first server line, and "port" set to the node's admin port.
	Nodes []HAProxyNode
	// MaxConn replaces every maxconn (global and defaults): HAProxy needs about two
	// file descriptors per connection, which a test machine's limit may not allow.
	MaxConn int
	// Foreground drops what needs root or a system (chroot, user, group, daemon) and
	// sends the log to stderr instead of syslog, so that HAProxy runs as the caller, in
	// the foreground, and what it logs (at the file's level) reaches the caller.
	Foreground bool
}

// HAProxyNode is a herald node as HAProxy sees it.
type HAProxyNode struct {
	Name      string // server name, e.g. "node1"
	Addr      string // public address (--addr), host:port
	AdminPort int    // the admin server's port (--admin-addr), for the health checks
}

// Localize rewrites c in place for site. It fails when the file lacks a piece the
// site replaces (a TLS frontend, a plain frontend, a backend with server lines, …),
// so that a change to haproxy.cfg cannot quietly leave a test running something else.
func (c *HAProxyConfig) Localize(site HAProxySite) error {
	if site.Foreground {
		g := c.Section("global", "")
		if g == nil {
			return fmt.Errorf("%w: no global section", ErrHAProxy)
		}
		g.Directives = slices.DeleteFunc(g.Directives, func(d HAProxyDirective) bool {
			return slices.Contains([]string{"chroot", "user", "group", "daemon"}, d.Words[0])
		})
		for i, d := range g.Directives {
			if d.Words[0] == "log" && len(d.Words) > 1 { // log <target> <facility> [level]
				g.Directives[i].Words = append([]string{"log", "stderr", "format", "raw"}, d.Words[2:]...)
			}
		}
	}
	if site.StatsSocket != "" {
		if err := c.replaceWord(site.StatsSocket, 2, "global", "stats", "socket"); err != nil {
			return err
		}
	}
	if site.MaxConn > 0 {
		n := 0
		for _, s := range c.Sections {
			if s.Kind != "global" && s.Kind != "defaults" {
				continue
			}
			for i, d := range s.Directives {
				if d.Words[0] == "maxconn" && len(d.Words) == 2 {
					s.Directives[i].Words = []string{"maxconn", strconv.Itoa(site.MaxConn)}
					n++
				}
			}
		}
		if n == 0 {
			return fmt.Errorf("%w: no maxconn in global or defaults", ErrHAProxy)
		}
	}
	for _, r := range []struct {
		addr string
		pick func(*HAProxySection, HAProxyDirective) bool
		what string
	}{
		{site.TLSBind, func(_ *HAProxySection, d HAProxyDirective) bool { return slices.Contains(d.Words, "ssl") }, "a TLS frontend (bind … ssl)"},
		{site.PlainBind, func(s *HAProxySection, d HAProxyDirective) bool {
			return !slices.Contains(d.Words, "ssl") && c.mode(s) == "tcp"
		}, "a plain mode tcp frontend"},
		{site.StatsBind, func(s *HAProxySection, _ HAProxyDirective) bool { return c.mode(s) == "http" }, "a mode http frontend"},
	} {
		if r.addr == "" {
			continue
		}
		n := 0
		for _, s := range c.SectionsOf("frontend") {
			for i, d := range s.Directives {
				if d.Words[0] == "bind" && len(d.Words) > 1 && r.pick(s, d) {
					s.Directives[i].Words[1] = r.addr
					n++
				}
			}
		}
		if n != 1 {
			return fmt.Errorf("%w: want exactly one bind line for %s, found %d", ErrHAProxy, r.what, n)
		}
	}
	if site.Cert != "" {
		n := 0
		for _, s := range c.SectionsOf("frontend") {
			for _, d := range s.Find("bind") {
				if i := slices.Index(d.Words, "crt"); i > 0 && i+1 < len(d.Words) {
					d.Words[i+1] = site.Cert
					n++
				}
			}
		}
		if n == 0 {
			return fmt.Errorf("%w: no bind line with crt", ErrHAProxy)
		}
	}
	if len(site.Nodes) > 0 {
		if err := c.localizeServers(site.Nodes); err != nil {
			return err
		}
	}
	return nil
}

// mode is a section's mode, or the defaults' one.
func (c *HAProxyConfig) mode(s *HAProxySection) string {
	if m, ok := s.Value("mode"); ok {
		return m
	}
	for _, d := range c.SectionsOf("defaults") {
		if m, ok := d.Value("mode"); ok {
			return m
		}
	}
	return "tcp" // HAProxy's default
}

// replaceWord sets word i of the single directive of the kind's unnamed (or only)
// section that starts with prefix.
func (c *HAProxyConfig) replaceWord(v string, i int, kind string, prefix ...string) error {
	n := 0
	for _, s := range c.SectionsOf(kind) {
		for j, d := range s.Directives {
			if len(d.Words) > max(i, len(prefix)) && slices.Equal(d.Words[:len(prefix)], prefix) {
				s.Directives[j].Words[i] = v
				n++
			}
		}
	}
	if n != 1 {
		return fmt.Errorf("%w: want one %q in %s, found %d", ErrHAProxy, strings.Join(prefix, " "), kind, n)
	}
	return nil
}

// localizeServers replaces the server lines of the one backend that has any.
func (c *HAProxyConfig) localizeServers(nodes []HAProxyNode) error {
	be := c.NodesBackend()
	if be == nil {
		return fmt.Errorf("%w: want exactly one backend with server lines (the nodes)", ErrHAProxy)
	}
	first := slices.IndexFunc(be.Directives, func(d HAProxyDirective) bool { return d.Words[0] == "server" })
	tmpl := be.Directives[first]
	if len(tmpl.Words) < 3 {
		return fmt.Errorf("%w: line %d: server without an address", ErrHAProxy, tmpl.Line)
	}
	// The template's options, without its own "port N".
	var opts []string
	for i := 3; i < len(tmpl.Words); i++ {
		if tmpl.Words[i] == "port" && i+1 < len(tmpl.Words) {
			i++
			continue
		}
		opts = append(opts, tmpl.Words[i])
	}
	var servers []HAProxyDirective
	for _, n := range nodes {
		if _, _, err := net.SplitHostPort(n.Addr); err != nil || n.Name == "" || n.AdminPort <= 0 {
			return fmt.Errorf("%w: node %+v: want a name, host:port and an admin port", ErrHAProxy, n)
		}
		w := append([]string{"server", n.Name, n.Addr}, opts...)
		w = append(w, "port", strconv.Itoa(n.AdminPort))
		servers = append(servers, HAProxyDirective{Words: w, Line: tmpl.Line})
	}
	rest := slices.DeleteFunc(slices.Clone(be.Directives), func(d HAProxyDirective) bool { return d.Words[0] == "server" })
	be.Directives = slices.Insert(rest, min(first, len(rest)), servers...)
	return nil
}
