package passwordless

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/prometheus/client_golang/prometheus"
)

// scrape reads Caddy's admin /metrics and returns the plugin's series,
// keyed as the text format prints them: name{label="value",...}.
func scrape(t *testing.T) map[string]float64 {
	t.Helper()
	return scrapeURL(t, "http://localhost:2999/metrics")
}

func scrapeURL(t *testing.T, url string) map[string]float64 {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatalf("scraping %s: %v", url, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("scraping %s: %d %s", url, res.StatusCode, b)
	}
	out := make(map[string]float64)
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "caddy_passwordless_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// deltas returns what changed between two scrapes, series by series.
func deltas(before, after map[string]float64) map[string]float64 {
	d := make(map[string]float64)
	for k, v := range after {
		if v != before[k] {
			d[k] = v - before[k]
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			d[k] = -before[k]
		}
	}
	return d
}

// expectDeltas checks that exactly the counters in want moved, by exactly
// that much. Histogram buckets and sums are left out: their values depend
// on how long sends took.
func expectDeltas(t *testing.T, got, want map[string]float64) {
	t.Helper()
	for k, v := range got {
		if strings.Contains(k, "_bucket{") || strings.Contains(k, "_sum{") {
			continue
		}
		if want[k] != v {
			t.Errorf("%s moved by %v, want %v", k, v, want[k])
		}
	}
	for k, v := range want {
		if _, ok := got[k]; !ok {
			t.Errorf("%s did not move, want %v", k, v)
		}
	}
}

// captureLog is a global option that writes Caddy's whole log, as JSON,
// to a file the test reads.
func captureLog(t *testing.T) (envOption, string) {
	path := filepath.Join(t.TempDir(), "caddy.log")
	return withGlobal(fmt.Sprintf(`log {
		output file %s
		format json {
			time_format iso8601
		}
		level INFO
	}`, path)), path
}

// logEntry is one line of Caddy's JSON log.
type logEntry map[string]any

func (l logEntry) str(k string) string { s, _ := l[k].(string); return s }

func readLog(t *testing.T, path string) (string, []logEntry) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var entries []logEntry
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var e logEntry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		entries = append(entries, e)
	}
	return string(b), entries
}

const auditLoggerFullName = "http.handlers.passwordless.audit"

// sessionOf reads the session id out of an access token.
func sessionOf(t *testing.T, tok string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", tok)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c Claims
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c.SessionID
}

// TestObservingASequence walks through what an operator wants to see:
// codes going out, logins good and bad, a lockout, a rate limit, and
// protected requests let through or turned away, by the API and by the
// browser sign-in. Afterwards the metrics have moved by exactly that, and
// the audit log tells the story without one code or token anywhere in the
// log.
func TestObservingASequence(t *testing.T) {
	logOpt, logPath := captureLog(t)
	// Failed exchanges are ada's 1 and bob's 10 below, and dan's 1.
	e := newEnv(t, logOpt, withConfig("max_attempts 10\nrate_limit {\n\tfailed_per_ip 12 1h\n}"))
	before := scrape(t)
	var secrets []string // every code and token the sequence sees

	// A code goes out; a second one at once is refused by send_interval.
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "ada@example.com"}), http.StatusOK)
	code := e.smtp.code(t, "ada@example.com")
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "ada@example.com"}), http.StatusTooManyRequests)
	// A wrong code, then the right one: a new user and her first session.
	wrong := wrongCode(code, 1)
	expectStatus(t, e.postForm("/auth/token/", map[string]string{"email": "ada@example.com", "token": wrong}), http.StatusBadRequest)
	r := e.postForm("/auth/token/", map[string]string{"email": "ada@example.com", "token": code})
	expectStatus(t, r, http.StatusOK)
	access, refresh := r.str("token"), r.str("refresh_token")
	sessionA := sessionOf(t, access)
	secrets = append(secrets, code, wrong, access, refresh)

	// Protected requests: let through, no credentials (API and browser),
	// and a cookie sent by another site.
	expectStatus(t, e.get("/api/things", bearer(access)...), http.StatusOK)
	expectStatus(t, e.get("/api/things"), http.StatusUnauthorized)
	expectStatus(t, e.get("/app/page", "Accept", "text/html"), http.StatusFound)
	expectStatus(t, e.do(http.MethodPost, "/api/things", http.Header{
		"Cookie": {cookieName + "=" + access}, "Origin": {"https://evil.example"},
	}, nil), http.StatusForbidden)

	// Bob asks for a code, and someone guesses it until he is locked, and
	// once more. (Guesses count toward a lockout only while a code lives.)
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "bob@example.com"}), http.StatusOK)
	secrets = append(secrets, e.smtp.code(t, "bob@example.com"))
	for i := 1; i < lockoutThreshold; i++ {
		guess := fmt.Sprintf("%06d", 100000+i)
		secrets = append(secrets, guess)
		expectStatus(t, e.postForm("/auth/token/", map[string]string{"email": "bob@example.com", "token": guess}), http.StatusBadRequest)
	}
	expectStatus(t, e.postForm("/auth/token/", map[string]string{"email": "bob@example.com", "token": "200000"}), http.StatusTooManyRequests)
	expectStatus(t, e.postForm("/auth/token/", map[string]string{"email": "bob@example.com", "token": "200001"}), http.StatusTooManyRequests)
	secrets = append(secrets, "200000", "200001")

	// Ada proves a new address: a verify code, and the alias is linked.
	expectStatus(t, e.postForm("/auth/verify/email/", map[string]string{"email": "ada@work.example"}, bearer(access)...), http.StatusOK)
	vcode := e.smtp.code(t, "ada@work.example")
	secrets = append(secrets, vcode)
	expectStatus(t, e.postForm("/auth/verify/", map[string]string{"email": "ada@work.example", "token": vcode}, bearer(access)...), http.StatusOK)

	// Her refresh token is rotated, then the old one comes back: stolen.
	r = e.postForm("/auth/refresh/", map[string]string{"refresh_token": refresh})
	expectStatus(t, r, http.StatusOK)
	secrets = append(secrets, r.str("token"), r.str("refresh_token"))
	expectStatus(t, e.postForm("/auth/refresh/", map[string]string{"refresh_token": refresh}), http.StatusUnauthorized)

	// Cy signs in with the browser form and signs out.
	expectStatus(t, e.postLogin(map[string]string{"alias": "cy@example.com"}), http.StatusOK)
	ccode := e.smtp.code(t, "cy@example.com")
	r = e.postLogin(map[string]string{"alias": "cy@example.com", "code": ccode})
	expectStatus(t, r, http.StatusSeeOther)
	cookie := sessionCookieOf(t, r).Value
	sessionB := sessionOf(t, cookie)
	secrets = append(secrets, ccode, cookie)
	expectStatus(t, e.do(http.MethodPost, "/auth/logout/", http.Header{
		"Cookie": {cookieName + "=" + cookie}, "Origin": {testBase},
	}, nil), http.StatusNoContent)

	// One more wrong guess spends the client's budget of failures: the
	// next gets 429 before any check.
	expectStatus(t, e.postForm("/auth/token/", map[string]string{"email": "dan@example.com", "token": "300000"}), http.StatusBadRequest)
	expectStatus(t, e.postForm("/auth/token/", map[string]string{"email": "dan@example.com", "token": "300001"}), http.StatusTooManyRequests)
	secrets = append(secrets, "300000", "300001")

	t.Run("metrics", func(t *testing.T) {
		// outbox_pending is a count the store is asked for once a second:
		// a poll taken while a code was on its way can still show it. Every
		// code has been received, so it falls back to where it was.
		eventually(t, "outbox_pending to settle", func() bool { return scrape(t)[pendingEmail] == before[pendingEmail] })
		expectDeltas(t, deltas(before, scrape(t)), map[string]float64{
			`caddy_passwordless_codes_sent_total{channel="email",purpose="login"}`:  3,
			`caddy_passwordless_codes_sent_total{channel="email",purpose="verify"}`: 1,
			`caddy_passwordless_delivery_seconds_count{channel="email"}`:            4,
			`caddy_passwordless_rate_limited_total{limit="send_interval"}`:          1,
			`caddy_passwordless_rate_limited_total{limit="failed_per_ip"}`:          1,
			`caddy_passwordless_logins_total{channel="email",result="success"}`:     2,
			`caddy_passwordless_logins_total{channel="email",result="invalid"}`:     1 + (lockoutThreshold - 1) + 1,
			`caddy_passwordless_logins_total{channel="email",result="locked"}`:      2,
			`caddy_passwordless_protected_requests_total{result="allowed"}`:         1,
			`caddy_passwordless_protected_requests_total{result="unauthenticated"}`: 2,
			`caddy_passwordless_protected_requests_total{result="forbidden"}`:       1,
		})
	})

	t.Run("audit", func(t *testing.T) {
		whole, entries := readLog(t, logPath)
		for _, s := range secrets {
			if s == "" {
				t.Fatal("a secret of the sequence is empty")
			}
			// Codes as whole numbers, so a timestamp's digits do not count.
			if regexp.MustCompile(`(^|[^0-9])` + regexp.QuoteMeta(s) + `([^0-9]|$)`).MatchString(whole) {
				t.Errorf("the log carries a code or token: %q", s)
			}
		}
		// User ids are random: they are named by order of appearance.
		var got []string
		users := map[string]string{"": "-"}
		for _, l := range entries {
			if l.str("logger") != auditLoggerFullName {
				continue
			}
			if l.str("level") != "info" {
				t.Errorf("audit entry at level %q", l.str("level"))
			}
			for k := range l {
				switch k {
				case "level", "ts", "logger", "msg", "user_id", "channel", "client_ip", "session_id":
				default:
					t.Errorf("audit entry %q has field %q", l.str("msg"), k)
				}
			}
			if l.str("client_ip") != "127.0.0.1" {
				t.Errorf("audit entry %q: client_ip %q", l.str("msg"), l.str("client_ip"))
			}
			id := l.str("user_id")
			if _, ok := users[id]; !ok {
				users[id] = fmt.Sprintf("user%d", len(users))
			}
			got = append(got, fmt.Sprintf("%s|%s|%s|%s", l.str("msg"), users[id], l.str("channel"), l.str("session_id")))
		}
		want := []string{
			"login failed|-|email|", // ada has no account yet
			"user created|user1|email|",
			"login|user1|email|" + sessionA,
		}
		for i := 1; i < lockoutThreshold; i++ {
			want = append(want, "login failed|-|email|") // bob has none
		}
		want = append(want,
			"locked|-|email|",
			"alias linked|user1|email|"+sessionA,
			"refresh reuse|user1||"+sessionA,
			"user created|user2|email|",
			"login|user2|email|"+sessionB,
			"logout|user2||"+sessionB,
			"login failed|-|email|", // dan
		)
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("audit entries:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})
}

// TestMetricsSurviveReload reloads Caddy with a changed config, which
// also holds a second passwordless handler and a `metrics` handler: the
// load succeeds, the counts carry on, and the handler serves them too.
func TestMetricsSurviveReload(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pwl.db")
	e := newEnv(t, withDB(db))
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "re@example.com"}), http.StatusOK)
	e.drain()
	before := scrape(t)
	if before[`caddy_passwordless_codes_sent_total{channel="email",purpose="login"}`] < 1 {
		t.Fatalf("no code counted before the reload: %v", before)
	}

	e = newEnv(t, withDB(db), withConfig("code_ttl 10m\npublic /metrics"),
		withSite("handle /metrics {\n\tmetrics\n}"),
		withSite("route /other/* {\n\tpasswordless {\n\t\tstorage sqlite "+db+"\n\t\tprefix /auth2\n\t}\n\trespond \"other\"\n}"))
	after := scrape(t)
	if d := deltas(before, after); len(d) != 0 {
		t.Fatalf("the reload changed the metrics: %v", d)
	}
	served := scrapeURL(t, testBase+"/metrics")
	if d := deltas(after, served); len(d) != 0 {
		t.Fatalf("the metrics handler serves other values than the admin endpoint: %v", d)
	}

	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "re2@example.com"}), http.StatusOK)
	e.drain()
	// A count of outbox_pending taken while the code was on its way can
	// still show it; the next one, within outboxPoll, does not.
	eventually(t, "outbox_pending to settle", func() bool { return scrape(t)[pendingEmail] == after[pendingEmail] })
	expectDeltas(t, deltas(after, scrape(t)), map[string]float64{
		`caddy_passwordless_codes_sent_total{channel="email",purpose="login"}`: 1,
		`caddy_passwordless_delivery_seconds_count{channel="email"}`:           1,
	})

	// And back to a plain config: one handler again.
	last := scrape(t)
	e = newEnv(t, withDB(db))
	if d := deltas(last, scrape(t)); len(d) != 0 {
		t.Fatalf("the second reload changed the metrics: %v", d)
	}
}

// TestRegisterMetricsTwice is what two handlers in one config and a
// reload do to registries.
func TestRegisterMetricsTwice(t *testing.T) {
	first := prometheus.NewPedanticRegistry()
	if err := registerMetrics(first); err != nil {
		t.Fatal(err)
	}
	if err := registerMetrics(first); err != nil {
		t.Fatalf("a second handler in the same config: %v", err)
	}
	countRateLimited("ip:192.0.2.1")
	second := prometheus.NewPedanticRegistry()
	if err := registerMetrics(second); err != nil {
		t.Fatalf("the next config's registry: %v", err)
	}
	value := func(reg *prometheus.Registry) float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != "caddy_passwordless_rate_limited_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				if m.GetLabel()[0].GetValue() == "per_ip" {
					return m.GetCounter().GetValue()
				}
			}
		}
		t.Fatal("no per_ip series")
		return 0
	}
	if a, b := value(first), value(second); a < 1 || a != b {
		t.Fatalf("per_ip: %v in the old registry, %v in the new", a, b)
	}
	// A key of a limit this file does not know still has a bounded label.
	countRateLimited("whatever:x")
	if err := testutilLabels(second); err != nil {
		t.Fatal(err)
	}
}

// testutilLabels checks that every label value of the plugin's series is
// one of the closed sets.
func testutilLabels(reg *prometheus.Registry) error {
	allowed := map[string]bool{
		"email": true, "mobile": true, "passkey": true, "login": true, "verify": true,
		"success": true, "invalid": true, "locked": true,
		"send_interval": true, "per_alias": true, "per_ip": true, "failed_per_ip": true, "other": true,
		"allowed": true, "unauthenticated": true, "forbidden": true,
	}
	mfs, err := reg.Gather()
	if err != nil {
		return err
	}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "caddy_passwordless_") {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if !allowed[l.GetValue()] {
					return fmt.Errorf("%s: label %s=%q is not of a closed set", mf.GetName(), l.GetName(), l.GetValue())
				}
			}
		}
	}
	return nil
}

const pendingEmail = `caddy_passwordless_outbox_pending{channel="email"}`

// outbox_pending, scraped from Caddy's /metrics, counts the messages
// still to be delivered: those being sent and those waiting, but not
// those never to be sent (an address the allow list refuses) nor one
// whose code a newer one superseded.
func TestOutboxPendingCountsDeliverableOnly(t *testing.T) {
	e := newEnv(t, withConfig("allow *@example.com\n"+openLimits))
	// The first two messages keep both workers busy for a while, and
	// the next ones wait in the queue meanwhile.
	e.holdWorkers(3 * time.Second)
	for _, addr := range []string{"out1@elsewhere.example.org", "out2@elsewhere.example.org", "dup@example.com", "dup@example.com", "live@example.com"} {
		expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": addr}), http.StatusOK)
	}
	time.Sleep(2*outboxPoll + 200*time.Millisecond) // counted at least once since
	// busy1 and busy2 being sent, dup's newest message and live's.
	if got := scrape(t)[pendingEmail]; got != 4 {
		t.Fatalf("outbox_pending is %v while 4 messages are to be delivered", got)
	}
	e.drain()
	eventually(t, "outbox_pending to fall to 0", func() bool { return scrape(t)[pendingEmail] == 0 })
}

// With two stores, outbox_pending is the sum of both; two sites on one
// store count its messages once.
func TestOutboxPendingSumsStores(t *testing.T) {
	mail, up := startSMTP(t), startUpstream(t)
	mail.setRejectTo("grey@example.com", &smtp.SMTPError{Code: 451, Message: "greylisted"})
	dir := t.TempDir()
	site := func(port int, db string) string {
		return fmt.Sprintf(`http://localhost:%d {
	passwordless {
		storage sqlite %s
		%s
	}
	reverse_proxy %s
}
`, port, filepath.Join(dir, db), mail.emailBlock(), strings.TrimPrefix(up.URL, "http://"))
	}
	c := newCluster(t, site(testPort, "one.db"), site(testPort+1, "one.db"), site(testPort+2, "two.db"))
	for _, base := range []string{"http://localhost:9080", "http://localhost:9082"} {
		expectStatus(t, c.post(base, "/auth/email/", url.Values{"email": {"grey@example.com"}}, ""), http.StatusOK)
	}
	eventually(t, "outbox_pending to count both stores", func() bool { return scrape(t)[pendingEmail] == 2 })
	time.Sleep(2 * outboxPoll)
	if got := scrape(t)[pendingEmail]; got != 2 {
		t.Fatalf("outbox_pending is %v with one message waiting in each of two stores", got)
	}
}
