package passwordless

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddytest"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	"github.com/caddyserver/certmagic"
)

// testClock is the plugin's clock in tests: real time plus an offset the
// test moves, so a test can skip an hour without waiting for it.
type testClock struct {
	mu     sync.Mutex
	offset time.Duration
}

var clock = new(testClock)

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

func TestMain(m *testing.M) {
	if os.Getenv(caddyMainEnv) == "1" {
		// The test binary is re-run as caddy for the command line tests:
		// the commands run as a real process, with this very build.
		caddycmd.Main()
		os.Exit(0)
	}
	now = clock.Now
	dir, err := os.MkdirTemp("", "pwl-test-ca")
	if err != nil {
		panic(err)
	}
	if err := setupTestCA(dir); err != nil {
		panic(err)
	}
	// Caddy keeps its internal CA and certificates, and its autosaved
	// config, in the user's directories: a fresh one for every run makes a
	// developer's run start as CI's does on a new machine, with no CA yet,
	// and leaves their own Caddy's files alone.
	caddy.DefaultStorage = &certmagic.FileStorage{Path: filepath.Join(dir, "caddy-data")}
	caddy.ConfigAutosavePath = filepath.Join(dir, "caddy-config", "autosave.json")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const (
	testPort = 9080
	testBase = "http://localhost:9080"
)

// upstream is the backend behind the protection; it reports what it got.
type upstream struct {
	*httptest.Server
	mu       sync.Mutex
	seen     []http.Header
	trailers []http.Header
}

func startUpstream(t testing.TB) *upstream {
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // trailers arrive after the body
		u.mu.Lock()
		u.seen = append(u.seen, r.Header.Clone())
		u.trailers = append(u.trailers, r.Trailer.Clone())
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{
			"path":   r.URL.Path,
			"id":     r.Header.Get("X-Auth-User-Id"),
			"email":  r.Header.Get("X-Auth-User-Email"),
			"mobile": r.Header.Get("X-Auth-User-Mobile"),
			"roles":  r.Header.Get("X-Auth-User-Roles"),
		})
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) requests() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.seen)
}

func (u *upstream) lastTrailer() http.Header {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.trailers) == 0 {
		return nil
	}
	return u.trailers[len(u.trailers)-1]
}

func (u *upstream) lastHeader() http.Header {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.seen) == 0 {
		return nil
	}
	return u.seen[len(u.seen)-1]
}

// env is one Caddy, started from a Caddyfile, with a real SMTP server, a
// real SQLite file and an upstream that reports what it received.
type env struct {
	t        testing.TB
	tester   *caddytest.Tester
	smtp     *smtpServer
	upstream *upstream
	db       string
}

type envOption func(*envConfig)

type envConfig struct {
	extra   string // more passwordless subdirectives
	email   string // the email block; default: SMTP to the test server
	site    string // more site directives, before reverse_proxy
	db      string
	global  string // more global options
	address string // the site's address; default http://localhost:9080
	mailCfg string // more subdirectives of the default email block
	noEmail bool
	started []func(*env) // run once Caddy runs
}

func withConfig(s string) envOption      { return func(c *envConfig) { c.extra += "\n" + s } }
func withEmail(s string) envOption       { return func(c *envConfig) { c.email = s } }
func withSite(s string) envOption        { return func(c *envConfig) { c.site += "\n" + s } }
func withDB(path string) envOption       { return func(c *envConfig) { c.db = path } }
func withEmailOption(s string) envOption { return func(c *envConfig) { c.mailCfg += "\n" + s } }
func withGlobal(s string) envOption      { return func(c *envConfig) { c.global += "\n" + s } }
func withoutEmail() envOption            { return func(c *envConfig) { c.noEmail = true } }

// withAnyHost serves the site whatever the Host, as the check site of
// another proxy must be.
func withAnyHost() envOption {
	return func(c *envConfig) { c.address = fmt.Sprintf("http://:%d", testPort) }
}

func newEnv(t testing.TB, opts ...envOption) *env {
	t.Helper()
	e := &env{t: t, smtp: startSMTP(t), upstream: startUpstream(t)}
	cfg := envConfig{db: filepath.Join(t.TempDir(), "pwl.db"), address: fmt.Sprintf("http://localhost:%d", testPort)}
	for _, o := range opts {
		o(&cfg)
	}
	e.db = cfg.db
	if cfg.email == "" && !cfg.noEmail {
		cfg.email = fmt.Sprintf(`email {
			from "Login <login@example.com>"
			smtp %s {
				tls none
				timeout 5s
			}
			%s
		}`, e.smtp.addr, cfg.mailCfg)
	}
	caddyfile := global(cfg.global) + fmt.Sprintf(`%s {
	passwordless {
		storage sqlite %s
		%s
		%s
	}
	%s
	reverse_proxy %s
}
`, cfg.address, e.db, cfg.email, cfg.extra, cfg.site, strings.TrimPrefix(e.upstream.URL, "http://"))
	e.tester = caddytest.NewTester(t)
	e.tester.InitServer(caddyfile, "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	e.smtp.settle = e.drain
	for _, f := range cfg.started {
		f(e)
	}
	return e
}

// newTester starts Caddy from a whole Caddyfile.
func newTester(t testing.TB, caddyfile string) *caddytest.Tester {
	t.Helper()
	tester := caddytest.NewTester(t)
	tester.InitServer(caddyfile, "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	return tester
}

// jsonField reads one string field of a JSON object.
func jsonField(t testing.TB, body []byte, key string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("not JSON: %s", body)
	}
	s, _ := m[key].(string)
	return s
}

// response is what a client saw.
type response struct {
	status int
	header http.Header
	body   []byte
	json   map[string]any
}

func (r response) str(key string) string {
	s, _ := r.json[key].(string)
	return s
}

func (e *env) do(method, path string, header http.Header, body io.Reader) response {
	e.t.Helper()
	req, err := http.NewRequest(method, testBase+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	client := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	r := response{status: res.StatusCode, header: res.Header, body: b}
	_ = json.Unmarshal(b, &r.json)
	return r
}

// postForm posts a form-encoded body, as drfpasswordless's tests do.
func (e *env) postForm(path string, fields map[string]string, header ...string) response {
	e.t.Helper()
	v := url.Values{}
	for k, val := range fields {
		v.Set(k, val)
	}
	h := http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}
	for i := 0; i+1 < len(header); i += 2 {
		h.Set(header[i], header[i+1])
	}
	return e.do(http.MethodPost, path, h, strings.NewReader(v.Encode()))
}

// postJSON posts a JSON body.
func (e *env) postJSON(path string, body any, header ...string) response {
	e.t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		e.t.Fatal(err)
	}
	h := http.Header{"Content-Type": {"application/json"}}
	for i := 0; i+1 < len(header); i += 2 {
		h.Set(header[i], header[i+1])
	}
	return e.do(http.MethodPost, path, h, strings.NewReader(string(b)))
}

func (e *env) get(path string, header ...string) response {
	e.t.Helper()
	h := http.Header{}
	for i := 0; i+1 < len(header); i += 2 {
		h.Set(header[i], header[i+1])
	}
	return e.do(http.MethodGet, path, h, nil)
}

// login runs the whole email flow and returns the token response.
func (e *env) login(email string) response {
	e.t.Helper()
	r := e.postForm("/auth/email/", map[string]string{"email": email})
	expectStatus(e.t, r, http.StatusOK)
	code := e.smtp.code(e.t, email)
	r = e.postForm("/auth/token/", map[string]string{"email": email, "token": code})
	expectStatus(e.t, r, http.StatusOK)
	return r
}

func expectStatus(t testing.TB, r response, want int) {
	t.Helper()
	if r.status != want {
		t.Fatalf("status %d, want %d; body: %s", r.status, want, r.body)
	}
}

func bearer(tok string) []string { return []string{"Authorization", "Bearer " + tok} }

// concurrently runs f(0..n-1) in n goroutines released at once and returns
// their results.
func concurrently(n int, f func(i int) int) []int {
	var wg sync.WaitGroup
	out := make([]int, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			out[i] = f(i)
		}()
	}
	close(start)
	wg.Wait()
	return out
}

// global is the tests' Caddy global options block, with extra options.
func global(extra ...string) string {
	opts := append([]string{"admin localhost:2999", fmt.Sprintf("http_port %d", testPort), "https_port 9443",
		"auto_https off", "skip_install_trust", "grace_period 1ms"}, extra...)
	return "{\n\t" + strings.Join(opts, "\n\t") + "\n}\n"
}

func doRequest(t *testing.T, req *http.Request) response {
	t.Helper()
	res, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	r := response{status: res.StatusCode, header: res.Header, body: body}
	_ = json.Unmarshal(body, &r.json)
	return r
}

// cluster is one Caddy serving several sites, each standing for an
// instance or a block of its own; a client reaches each by its base URL.
type cluster struct{ t *testing.T }

// newCluster starts Caddy with the tests' global options and sites.
func newCluster(t *testing.T, sites ...string) *cluster {
	t.Helper()
	newTester(t, global()+strings.Join(sites, ""))
	return &cluster{t: t}
}

// post sends a form to base+path, with a bearer token when tok is set.
func (c *cluster) post(base, path string, form url.Values, tok string) response {
	c.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	return doRequest(c.t, req)
}

// get fetches base+path with a bearer token.
func (c *cluster) get(base, path, tok string) response {
	c.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+path, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	return doRequest(c.t, req)
}

// holdWorkers keeps both outbox workers busy for d: it sends codes to
// busy1@ and busy2@example.com, whose deliveries take d each, and waits
// until each is taken, so that what is queued next waits in the queue.
// Mail is not drained before it is read from then on.
func (e *env) holdWorkers(d time.Duration) {
	e.t.Helper()
	e.smtp.settle = nil
	var slow atomic.Int32
	slow.Store(2)
	e.smtp.mu.Lock()
	e.smtp.delay = func() time.Duration {
		if slow.Add(-1) >= 0 {
			return d
		}
		return 0
	}
	e.smtp.mu.Unlock()
	for i, busy := range []string{"busy1@example.com", "busy2@example.com"} {
		expectStatus(e.t, e.postForm("/auth/email/", map[string]string{"email": busy}), http.StatusOK)
		eventually(e.t, "a worker to take it", func() bool { return e.smtp.rcptCount() == i+1 })
	}
}
