package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// The Kubernetes objects, reduced to the fields these tests read.

type object struct {
	APIVersion string    `yaml:"apiVersion"`
	Kind       string    `yaml:"kind"`
	Metadata   meta      `yaml:"metadata"`
	file       string    // where it was read
	node       yaml.Node // the whole document, for the kind's own type
}

type meta struct {
	Name        string            `yaml:"name"`
	Namespace   string            `yaml:"namespace"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type labelSelector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

type workload struct { // Deployment, StatefulSet
	Spec struct {
		Replicas *int          `yaml:"replicas"`
		Selector labelSelector `yaml:"selector"`
		Strategy struct {
			Type          string `yaml:"type"`
			RollingUpdate struct {
				MaxUnavailable *intOrString `yaml:"maxUnavailable"`
			} `yaml:"rollingUpdate"`
		} `yaml:"strategy"`
		Template struct {
			Metadata meta    `yaml:"metadata"`
			Spec     podSpec `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type podSpec struct {
	TerminationGracePeriodSeconds *int `yaml:"terminationGracePeriodSeconds"`
	SecurityContext               struct {
		RunAsNonRoot *bool  `yaml:"runAsNonRoot"`
		RunAsUser    *int64 `yaml:"runAsUser"`
	} `yaml:"securityContext"`
	Containers []container `yaml:"containers"`
	Volumes    []struct {
		Name      string `yaml:"name"`
		ConfigMap *struct {
			Name string `yaml:"name"`
		} `yaml:"configMap"`
		Secret *struct {
			SecretName string `yaml:"secretName"`
		} `yaml:"secret"`
	} `yaml:"volumes"`
}

type container struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	Ports   []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	Env []struct {
		Name  string `yaml:"name"`
		Value string `yaml:"value"`
	} `yaml:"env"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	Lifecycle      struct {
		PreStop *struct {
			Sleep *struct {
				Seconds int `yaml:"seconds"`
			} `yaml:"sleep"`
			Exec *struct {
				Command []string `yaml:"command"`
			} `yaml:"exec"`
		} `yaml:"preStop"`
	} `yaml:"lifecycle"`
	Resources struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
}

type probe struct {
	HTTPGet *struct {
		Path string      `yaml:"path"`
		Port intOrString `yaml:"port"`
	} `yaml:"httpGet"`
	TCPSocket *struct {
		Port intOrString `yaml:"port"`
	} `yaml:"tcpSocket"`
	PeriodSeconds    int `yaml:"periodSeconds"`
	FailureThreshold int `yaml:"failureThreshold"`
}

type service struct {
	Spec struct {
		Type                  string            `yaml:"type"`
		ExternalTrafficPolicy string            `yaml:"externalTrafficPolicy"`
		Selector              map[string]string `yaml:"selector"`
		Ports                 []struct {
			Name       string      `yaml:"name"`
			Port       int         `yaml:"port"`
			TargetPort intOrString `yaml:"targetPort"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

type pdb struct {
	Spec struct {
		MinAvailable   *intOrString  `yaml:"minAvailable"`
		MaxUnavailable *intOrString  `yaml:"maxUnavailable"`
		Selector       labelSelector `yaml:"selector"`
	} `yaml:"spec"`
}

type configMap struct {
	Data map[string]string `yaml:"data"`
}

type kustomization struct {
	Resources []string `yaml:"resources"`
}

// intOrString is Kubernetes' IntOrString: a port number or a port name, a count or a
// percentage.
type intOrString struct {
	Int int
	Str string
}

func (v *intOrString) UnmarshalYAML(n *yaml.Node) error {
	if n.Tag == "!!int" {
		return n.Decode(&v.Int)
	}
	return n.Decode(&v.Str)
}

func (v intOrString) String() string {
	if v.Str != "" {
		return v.Str
	}
	return strconv.Itoa(v.Int)
}

// readManifests reads every YAML document of deploy/k8s.
func readManifests(t *testing.T) (objs []*object, kust *kustomization, files []string) {
	t.Helper()
	paths, err := filepath.Glob("k8s/*")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		if !strings.HasSuffix(p, ".yaml") {
			t.Errorf("%s: deploy/k8s holds only .yaml files", p)
			continue
		}
		dec := yaml.NewDecoder(bytes.NewReader(readFile(t, p)))
		for i := 0; ; i++ {
			var n yaml.Node
			if err := dec.Decode(&n); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s, document %d: %v", p, i+1, err)
			}
			o := &object{file: p, node: n}
			if err := n.Decode(o); err != nil {
				t.Fatalf("%s, document %d: %v", p, i+1, err)
			}
			if o.Kind == "Kustomization" {
				kust = &kustomization{}
				decode(t, o, kust)
				continue
			}
			if o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" {
				t.Errorf("%s, document %d: apiVersion, kind and metadata.name are required", p, i+1)
			}
			if o.Metadata.Namespace != "" {
				t.Errorf("%s: %s/%s sets a namespace; leave it to kubectl -n or the kustomization", p, o.Kind, o.Metadata.Name)
			}
			objs = append(objs, o)
		}
		if filepath.Base(p) != "kustomization.yaml" {
			files = append(files, filepath.Base(p))
		}
	}
	if kust == nil {
		t.Fatal("deploy/k8s has no kustomization.yaml")
	}
	return objs, kust, files
}

func decode(t *testing.T, o *object, into any) {
	t.Helper()
	if err := o.node.Decode(into); err != nil {
		t.Fatalf("%s: %s/%s: %v", o.file, o.Kind, o.Metadata.Name, err)
	}
}

func find(t *testing.T, objs []*object, kind, name string) *object {
	t.Helper()
	for _, o := range objs {
		if o.Kind == kind && o.Metadata.Name == name {
			return o
		}
	}
	t.Fatalf("deploy/k8s has no %s named %s", kind, name)
	return nil
}

// selects reports whether a selector (matchLabels or a Service's selector) picks
// pods with these labels.
func selects(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// portOf is the port number of a host:port flag value (":6001" → 6001).
func portOf(t *testing.T, flag, v string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(v)
	if err != nil {
		t.Fatalf("--%s %q: %v", flag, v, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("--%s %q: port %q", flag, v, p)
	}
	return n
}

// containerPort resolves a probe's or Service's port (a name or a number) against
// the container's ports; 0 when it names none.
func containerPort(c container, p intOrString) int {
	for _, cp := range c.Ports {
		if (p.Str != "" && cp.Name == p.Str) || (p.Str == "" && cp.ContainerPort == p.Int) {
			return cp.ContainerPort
		}
	}
	return 0
}

func TestKubernetes(t *testing.T) {
	objs, kust, files := readManifests(t)

	// kubectl apply -k applies exactly the files of the folder.
	if got, want := slices.Sorted(slices.Values(kust.Resources)), slices.Sorted(slices.Values(files)); !slices.Equal(got, want) {
		t.Errorf("kustomization.yaml lists %v, the folder holds %v", got, want)
	}

	dep := find(t, objs, "Deployment", "herald")
	var d workload
	decode(t, dep, &d)
	pod := d.Spec.Template.Spec
	podLabels := d.Spec.Template.Metadata.Labels
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Errorf("Deployment herald: replicas %v, want at least 2 (a drained pod's clients need somewhere to go)", d.Spec.Replicas)
	}
	if !selects(d.Spec.Selector.MatchLabels, podLabels) {
		t.Errorf("Deployment herald: selector %v does not select its pods %v", d.Spec.Selector.MatchLabels, podLabels)
	}
	if mu := d.Spec.Strategy.RollingUpdate.MaxUnavailable; mu == nil || mu.String() != "0" {
		t.Errorf("Deployment herald: rollingUpdate.maxUnavailable %v, want 0 (a new pod is ready before an old one drains)", mu)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("Deployment herald: %d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	a, err := parseHeraldArgs(c.Args, heraldFlags(t))
	if err != nil {
		t.Fatalf("Deployment herald: args: %v", err)
	}
	if len(c.Command) != 0 {
		t.Errorf("Deployment herald: command %v replaces the image's entrypoint; give args only", c.Command)
	}

	// Ports: the container's named ports are herald's --addr and --admin-addr.
	named := map[string]int{}
	for _, p := range c.Ports {
		named[p.Name] = p.ContainerPort
	}
	for flag, name := range map[string]string{"addr": "public", "admin-addr": "admin"} {
		if !a.has(flag) {
			t.Errorf("Deployment herald: no --%s in args", flag)
			continue
		}
		if got := portOf(t, flag, a.get(flag)); got != named[name] {
			t.Errorf("Deployment herald: --%s %s, but container port %q is %d", flag, a.get(flag), name, named[name])
		}
	}
	if host, _, _ := net.SplitHostPort(a.get("admin-addr")); host != "" && host != "0.0.0.0" && host != "::" {
		t.Errorf("Deployment herald: --admin-addr %s: the kubelet probes the pod's address, so listen on all of them (:port)", a.get("admin-addr"))
	}

	// Probes: /readyz and /healthz on the admin port.
	for _, p := range []struct {
		what  string
		probe *probe
		path  string
	}{{"readinessProbe", c.ReadinessProbe, "/readyz"}, {"livenessProbe", c.LivenessProbe, "/healthz"}} {
		switch {
		case p.probe == nil || p.probe.HTTPGet == nil:
			t.Errorf("Deployment herald: no %s.httpGet", p.what)
		case p.probe.HTTPGet.Path != p.path:
			t.Errorf("Deployment herald: %s path %s, want %s", p.what, p.probe.HTTPGet.Path, p.path)
		case containerPort(c, p.probe.HTTPGet.Port) != named["admin"]:
			t.Errorf("Deployment herald: %s on port %s, want the admin port (%d)", p.what, p.probe.HTTPGet.Port, named["admin"])
		}
	}

	// The drain: preStop sleep, then SIGTERM; herald spreads its 4200 closes over
	// --drain-window and exits within --shutdown-timeout; the kubelet's SIGKILL comes
	// terminationGracePeriodSeconds after the preStop began.
	const margin = 5 * time.Second
	drain := a.duration(t, "drain-window")
	shutdown := a.duration(t, "shutdown-timeout")
	if pod.TerminationGracePeriodSeconds == nil {
		t.Fatal("Deployment herald: no terminationGracePeriodSeconds (Kubernetes' default, 30 s, is chosen for nothing here)")
	}
	grace := time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
	var preStop time.Duration
	switch ps := c.Lifecycle.PreStop; {
	case ps == nil:
		t.Error("Deployment herald: no preStop hook: SIGTERM would come before the load balancer stops sending clients")
	case ps.Sleep != nil:
		preStop = time.Duration(ps.Sleep.Seconds) * time.Second
	case ps.Exec != nil:
		t.Errorf("Deployment herald: preStop exec %v: the image has no shell and no sleep; use preStop.sleep", ps.Exec.Command)
	}
	if preStop <= 0 {
		t.Error("Deployment herald: the preStop hook does not wait")
	}
	if drain >= shutdown {
		t.Errorf("Deployment herald: --drain-window %v must be shorter than --shutdown-timeout %v", drain, shutdown)
	}
	if grace < preStop+shutdown+margin {
		t.Errorf("Deployment herald: terminationGracePeriodSeconds %v < preStop sleep %v + --shutdown-timeout %v + %v: the kubelet would kill herald mid-drain",
			grace, preStop, shutdown, margin)
	}
	if grace <= drain+margin || grace < shutdown || preStop >= grace {
		t.Errorf("Deployment herald: terminationGracePeriodSeconds %v must exceed --drain-window %v + %v and --shutdown-timeout %v, and the preStop sleep %v",
			grace, drain, margin, shutdown, preStop)
	}
	t.Logf("drain: preStop %v, --drain-window %v, --shutdown-timeout %v, terminationGracePeriodSeconds %v", preStop, drain, shutdown, grace)

	if a.has("proxy-protocol") && !a.has("trusted-proxies") {
		t.Error("Deployment herald: --proxy-protocol without --trusted-proxies trusts a PROXY header from anyone")
	}

	// Security and resources.
	if sc := pod.SecurityContext; sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 {
		t.Error("Deployment herald: the pod must run as a non-root user (runAsNonRoot, runAsUser)")
	}
	if sc := c.SecurityContext; sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Error("Deployment herald: the container needs readOnlyRootFilesystem, allowPrivilegeEscalation: false and capabilities.drop [ALL]")
	}
	for _, r := range []struct {
		what string
		m    map[string]string
		keys []string
	}{{"requests", c.Resources.Requests, []string{"cpu", "memory"}}, {"limits", c.Resources.Limits, []string{"memory"}}} {
		for _, k := range r.keys {
			if r.m[k] == "" {
				t.Errorf("Deployment herald: no resources.%s.%s", r.what, k)
			}
		}
	}

	// The apps: --config is a file of a mounted ConfigMap (or Secret) that herald
	// accepts.
	cfgPath := a.get("config")
	var apps string
	for _, m := range c.VolumeMounts {
		if filepath.Dir(cfgPath) != filepath.Clean(m.MountPath) {
			continue
		}
		for _, v := range pod.Volumes {
			if v.Name != m.Name || v.ConfigMap == nil {
				continue
			}
			var cm configMap
			decode(t, find(t, objs, "ConfigMap", v.ConfigMap.Name), &cm)
			apps = cm.Data[filepath.Base(cfgPath)]
		}
	}
	if apps == "" {
		t.Fatalf("Deployment herald: --config %s is not a key of a ConfigMap mounted at %s", cfgPath, filepath.Dir(cfgPath))
	}
	if !json.Valid([]byte(apps)) {
		t.Errorf("ConfigMap: %s is not valid JSON", filepath.Base(cfgPath))
	}

	// The Service: a LoadBalancer, Local, onto the public port only.
	var svc service
	decode(t, find(t, objs, "Service", "herald"), &svc)
	if svc.Spec.Type != "LoadBalancer" || svc.Spec.ExternalTrafficPolicy != "Local" {
		t.Errorf("Service herald: type %q, externalTrafficPolicy %q; want LoadBalancer and Local", svc.Spec.Type, svc.Spec.ExternalTrafficPolicy)
	}
	if !selects(svc.Spec.Selector, podLabels) {
		t.Errorf("Service herald: selector %v does not select the herald pods %v", svc.Spec.Selector, podLabels)
	}
	if len(svc.Spec.Ports) == 0 {
		t.Error("Service herald: no ports")
	}
	for _, p := range svc.Spec.Ports {
		if containerPort(c, p.TargetPort) != named["public"] {
			t.Errorf("Service herald: port %d targets %s, want the public port (%d); the admin port stays inside the cluster", p.Port, p.TargetPort, named["public"])
		}
	}

	// The PodDisruptionBudget: herald's pods, one at a time.
	var budget pdb
	decode(t, find(t, objs, "PodDisruptionBudget", "herald"), &budget)
	if !selects(budget.Spec.Selector.MatchLabels, podLabels) {
		t.Errorf("PodDisruptionBudget herald: selector %v does not select the herald pods %v", budget.Spec.Selector.MatchLabels, podLabels)
	}
	switch s := budget.Spec; {
	case s.MaxUnavailable != nil:
		if s.MaxUnavailable.String() != "1" {
			t.Errorf("PodDisruptionBudget herald: maxUnavailable %s, want 1", s.MaxUnavailable)
		}
	case s.MinAvailable != nil:
		if s.MinAvailable.Str != "" || s.MinAvailable.Int >= *d.Spec.Replicas || s.MinAvailable.Int < 1 {
			t.Errorf("PodDisruptionBudget herald: minAvailable %s: want between 1 and replicas-1", s.MinAvailable)
		}
	default:
		t.Error("PodDisruptionBudget herald: neither maxUnavailable nor minAvailable")
	}

	// Redis: --redis names a Service that selects a single Redis pod on that port.
	checkRedis(t, objs, a.get("redis"))

	// Every label selector in the folder selects something, and nothing else
	// selects herald's pods by accident (the Redis pods share app.kubernetes.io/name).
	for _, o := range objs {
		if o.Kind != "Service" || o.Metadata.Name == "herald" {
			continue
		}
		var s service
		decode(t, o, &s)
		if selects(s.Spec.Selector, podLabels) {
			t.Errorf("Service %s also selects the herald pods", o.Metadata.Name)
		}
	}

	t.Run("args start herald", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "apps.json")
		if err := os.WriteFile(f, []byte(apps), 0o600); err != nil {
			t.Fatal(err)
		}
		startHeraldWith(t, a, f, false)
	})
}

func checkRedis(t *testing.T, objs []*object, url string) {
	t.Helper()
	host, port, ok := strings.Cut(strings.TrimPrefix(url, "redis://"), ":")
	if !strings.HasPrefix(url, "redis://") || !ok {
		t.Fatalf("Deployment herald: --redis %q: want redis://<service>:<port>", url)
	}
	var s service
	decode(t, find(t, objs, "Service", host), &s)
	var r workload
	var ro *object
	for _, o := range objs {
		if o.Kind != "Deployment" && o.Kind != "StatefulSet" {
			continue
		}
		var w workload
		decode(t, o, &w)
		if selects(s.Spec.Selector, w.Spec.Template.Metadata.Labels) {
			r, ro = w, o
		}
	}
	if ro == nil {
		t.Fatalf("Service %s selects no Deployment or StatefulSet", host)
	}
	if r.Spec.Replicas == nil || *r.Spec.Replicas != 1 {
		t.Errorf("%s %s: replicas %v, want 1 (a plain Redis is not replicated; two would split the nodes)", ro.Kind, ro.Metadata.Name, r.Spec.Replicas)
	}
	if len(r.Spec.Template.Spec.Containers) == 0 {
		t.Fatalf("%s %s: no container", ro.Kind, ro.Metadata.Name)
	}
	rc := r.Spec.Template.Spec.Containers[0]
	found := false
	for _, p := range s.Spec.Ports {
		if strconv.Itoa(p.Port) == port && containerPort(rc, p.TargetPort) != 0 {
			found = true
		}
	}
	if !found {
		t.Errorf("Service %s: no port %s onto a port of the Redis container", host, port)
	}
	if sc := r.Spec.Template.Spec.SecurityContext; sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Errorf("%s %s: runAsNonRoot", ro.Kind, ro.Metadata.Name)
	}
}

// TestKubernetesLabels: every object carries the app's name label, so that
// kubectl get all -l app.kubernetes.io/name=herald lists them.
func TestKubernetesLabels(t *testing.T) {
	objs, _, _ := readManifests(t)
	kinds := map[string]int{}
	for _, o := range objs {
		kinds[o.Kind]++
		if o.Metadata.Labels["app.kubernetes.io/name"] != "herald" {
			t.Errorf("%s: %s/%s has no label app.kubernetes.io/name: herald", o.file, o.Kind, o.Metadata.Name)
		}
	}
	for _, k := range []string{"Deployment", "Service", "PodDisruptionBudget", "ConfigMap"} {
		if kinds[k] == 0 {
			t.Errorf("deploy/k8s has no %s", k)
		}
	}
	t.Logf("objects: %v", fmt.Sprint(slices.Sorted(maps.Keys(kinds))))
}
