package passwordless

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

func TestSendIntervalLimit(t *testing.T) {
	e := newEnv(t)
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "iv@example.com"}), http.StatusOK)
	r := e.postForm("/auth/email/", map[string]string{"email": "IV@example.com"})
	expectStatus(t, r, http.StatusTooManyRequests)
	if r.header.Get("Retry-After") != "60" || r.str("detail") == "" {
		t.Fatalf("Retry-After %q, body %s", r.header.Get("Retry-After"), r.body)
	}
	e.drain()
	if n := len(e.smtp.all()); n != 1 {
		t.Fatalf("%d messages sent, want 1", n)
	}
	clock.Advance(30 * time.Second)
	r = e.postForm("/auth/email/", map[string]string{"email": "iv@example.com"})
	if r.header.Get("Retry-After") != "30" {
		t.Fatalf("after 30s: Retry-After %q", r.header.Get("Retry-After"))
	}
	clock.Advance(30 * time.Second)
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "iv@example.com"}), http.StatusOK)
}

func TestSendIntervalOff(t *testing.T) {
	e := newEnv(t, withConfig("rate_limit {\n send_interval 0s\n}"))
	for range 3 {
		expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "again@example.com"}), http.StatusOK)
	}
}

func TestPerAliasLimit(t *testing.T) {
	e := newEnv(t, withConfig("rate_limit {\n send_interval 0s\n per_alias 3 1h\n}"))
	for range 3 {
		expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "pa@example.com"}), http.StatusOK)
	}
	r := e.postForm("/auth/email/", map[string]string{"email": "pa@example.com"})
	expectStatus(t, r, http.StatusTooManyRequests)
	if r.header.Get("Retry-After") != "1200" { // the allowance refills one per 20 minutes
		t.Fatalf("Retry-After %q", r.header.Get("Retry-After"))
	}
	// Other aliases are not affected.
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "other@example.com"}), http.StatusOK)
	clock.Advance(20 * time.Minute)
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "pa@example.com"}), http.StatusOK)
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "pa@example.com"}), http.StatusTooManyRequests)
}

func TestPerIPLimitIgnoresForgedHeaders(t *testing.T) {
	e := newEnv(t, withConfig("rate_limit {\n per_ip 3 1h\n}"))
	for i := range 3 {
		r := e.postForm("/auth/email/", map[string]string{"email": fmt.Sprintf("ip%d@example.com", i)}, "X-Forwarded-For", fmt.Sprintf("203.0.113.%d", i))
		expectStatus(t, r, http.StatusOK)
	}
	// No trusted proxies: the header cannot move the client to a new bucket.
	r := e.postForm("/auth/email/", map[string]string{"email": "ip9@example.com"}, "X-Forwarded-For", "198.51.100.9")
	expectStatus(t, r, http.StatusTooManyRequests)
	if r.header.Get("Retry-After") == "" {
		t.Fatal("no Retry-After")
	}
}

func TestPerIPLimitHonoursTrustedProxies(t *testing.T) {
	e := newEnv(t, withConfig("rate_limit {\n per_ip 2 1h\n}"),
		withGlobal("servers {\n trusted_proxies static 127.0.0.1/8 ::1\n}"))
	send := func(ip, email string) response {
		return e.postForm("/auth/email/", map[string]string{"email": email}, "X-Forwarded-For", ip)
	}
	expectStatus(t, send("203.0.113.1", "a1@example.com"), http.StatusOK)
	expectStatus(t, send("203.0.113.1", "a2@example.com"), http.StatusOK)
	expectStatus(t, send("203.0.113.1", "a3@example.com"), http.StatusTooManyRequests)
	// Another client behind the same proxy has its own bucket.
	expectStatus(t, send("203.0.113.2", "a4@example.com"), http.StatusOK)
}

// Per-IP limits counted every IPv6 address apart: eight addresses of one
// /64 had eight budgets, for code requests and for failed guesses alike.
func TestPerIPLimitsCountAnIPv6Network(t *testing.T) {
	e := newEnv(t, withConfig("rate_limit {\n send_interval 0s\n per_ip 3 1h\n failed_per_ip 3 1h\n}"),
		withGlobal("servers {\n trusted_proxies static 127.0.0.1/8 ::1\n}"))
	send := func(ip, email string) int {
		return e.postForm("/auth/email/", map[string]string{"email": email}, "X-Forwarded-For", ip).status
	}
	guess := func(ip string) int {
		return e.postForm("/auth/token/", map[string]string{"email": "g@example.com", "token": "000000"}, "X-Forwarded-For", ip).status
	}
	var codes, guesses []int
	for i := 1; i <= 8; i++ {
		ip := fmt.Sprintf("2001:db8:1:2::%x", i)
		codes = append(codes, send(ip, fmt.Sprintf("v6-%d@example.com", i)))
		guesses = append(guesses, guess(ip))
	}
	want := []int{200, 200, 200, 429, 429, 429, 429, 429}
	if fmt.Sprint(codes) != fmt.Sprint(want) {
		t.Errorf("code requests from one /64: %v, want %v", codes, want)
	}
	if want := []int{400, 400, 400, 429, 429, 429, 429, 429}; fmt.Sprint(guesses) != fmt.Sprint(want) {
		t.Errorf("failed guesses from one /64: %v, want %v", guesses, want)
	}
	// Another /64 has its own budget.
	if got := send("2001:db8:1:3::1", "other@example.com"); got != http.StatusOK {
		t.Errorf("another /64: %d", got)
	}
	// An IPv4-mapped address is its IPv4 address.
	for i, ip := range []string{"192.0.2.7", "::ffff:192.0.2.7", "192.0.2.7"} {
		expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": fmt.Sprintf("v4-%d@example.com", i)}, "X-Forwarded-For", ip), http.StatusOK)
	}
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "v4-3@example.com"}, "X-Forwarded-For", "::ffff:192.0.2.7"), http.StatusTooManyRequests)
}

// With ipv6_prefix 128 each address is counted apart again.
func TestIPv6PrefixIsConfigurable(t *testing.T) {
	e := newEnv(t, withConfig("rate_limit {\n send_interval 0s\n per_ip 1 1h\n ipv6_prefix 128\n}"),
		withGlobal("servers {\n trusted_proxies static 127.0.0.1/8 ::1\n}"))
	for i := 1; i <= 3; i++ {
		r := e.postForm("/auth/email/", map[string]string{"email": fmt.Sprintf("p%d@example.com", i)}, "X-Forwarded-For", fmt.Sprintf("2001:db8::%d", i))
		expectStatus(t, r, http.StatusOK)
	}
}

// Gmail ignores dots and everyone's +tags reach one inbox: the per_alias
// limit counts the inbox, while the code goes to the alias as typed.
func TestPerAliasLimitCountsTheInbox(t *testing.T) {
	e := newEnv(t, withConfig("rate_limit {\n send_interval 0s\n per_alias 2 1h\n}"))
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "Jane.Doe+news@gmail.com"}), http.StatusOK)
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "janedoe@googlemail.com"}), http.StatusOK)
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "j.a.n.e.d.o.e+x@gmail.com"}), http.StatusTooManyRequests)
	// Elsewhere dots are part of the address; tags are not.
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "jane.doe+a@example.com"}), http.StatusOK)
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "jane.doe+b@example.com"}), http.StatusOK)
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "jane.doe@example.com"}), http.StatusTooManyRequests)
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "janedoe@example.com"}), http.StatusOK)
	e.drain()
	got := map[string]bool{}
	for _, m := range e.smtp.all() {
		got[m.To] = true
	}
	for _, to := range []string{"jane.doe+news@gmail.com", "janedoe@googlemail.com", "jane.doe+a@example.com"} {
		if !got[to] {
			t.Errorf("no mail to %s as typed; got %v", to, got)
		}
	}
}

// TestPerAliasLimitExactUnderConcurrency hammers one alias from many
// goroutines: exactly the limit gets through, and no more mails.
func TestPerAliasLimitExactUnderConcurrency(t *testing.T) {
	e := newEnv(t, withConfig("rate_limit {\n send_interval 0s\n per_alias 5 1h\n per_ip 1000 1h\n}"))
	const n = 40
	statuses := concurrently(n, func(int) int {
		return e.postForm("/auth/email/", map[string]string{"email": "hammer@example.com"}).status
	})
	count := map[int]int{}
	for _, s := range statuses {
		count[s]++
	}
	if count[http.StatusOK] != 5 || count[http.StatusTooManyRequests] != n-5 {
		t.Fatalf("statuses %v, want 5 × 200 and %d × 429", count, n-5)
	}
	e.drain()
	// Each code replaces the one before: a message whose code was
	// superseded before its turn is dropped, never sent.
	if got := len(e.smtp.all()); got < 1 || got > 5 {
		t.Fatalf("%d mails sent, want 1 to 5", got)
	}
}

// wrongCode returns a code of the right length that is not code.
func wrongCode(code string, i int) string {
	w := fmt.Sprintf("%06d", (i*7919)%1000000)
	if w == code {
		w = fmt.Sprintf("%06d", (i*7919+1)%1000000)
	}
	return w
}

func TestLockoutAcrossCodes(t *testing.T) {
	e := newEnv(t, withConfig("max_attempts 3\nrate_limit {\n send_interval 0s\n per_alias 100 1h\n}"))
	alias := "lock@example.com"
	guess := func(code string) response {
		return e.postForm("/auth/token/", map[string]string{"email": alias, "token": code})
	}
	failures := 0
	for failures < lockoutThreshold-1 {
		// A new code each round: it must not reset the count.
		expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": alias}), http.StatusOK)
		code := e.smtp.code(t, alias)
		for i := 0; i < 3 && failures < lockoutThreshold-1; i++ {
			expectStatus(t, guess(wrongCode(code, failures)), http.StatusBadRequest)
			failures++
		}
	}
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": alias}), http.StatusOK)
	code := e.smtp.code(t, alias)
	r := guess(wrongCode(code, 99)) // the threshold-th failure locks
	expectStatus(t, r, http.StatusTooManyRequests)
	if r.header.Get("Retry-After") != "60" {
		t.Fatalf("Retry-After %q", r.header.Get("Retry-After"))
	}
	// Locked: even the right code is refused, and the attempt is not a guess.
	expectStatus(t, guess(code), http.StatusTooManyRequests)
	clock.Advance(61 * time.Second)
	// The code died at max_attempts meanwhile; a new one logs in and
	// resets the count.
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": alias}), http.StatusOK)
	expectStatus(t, guess(e.smtp.code(t, alias)), http.StatusOK)
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": alias}), http.StatusOK)
	expectStatus(t, guess(wrongCode(e.smtp.code(t, alias), 1)), http.StatusBadRequest)
}

// One client could keep a chosen account locked: once the lock ended, one
// wrong guess locked it again, for twice as long, without any live code.
// Now a guess at an alias with no live code counts only against the
// client, and a lock that has ended needs a whole new run of failures.
func TestLockoutCannotBeKeptUp(t *testing.T) {
	e := newEnv(t, withConfig("max_attempts 10\nrate_limit {\n send_interval 0s\n per_alias 100 1h\n failed_per_ip 1000 1h\n}"))
	alias := "victim@example.com"
	guess := func(code string) response {
		return e.postForm("/auth/token/", map[string]string{"email": alias, "token": code})
	}
	// Blind guesses, no code asked for: never a lock.
	for i := range 3 * lockoutThreshold {
		expectStatus(t, guess(wrongCode("", i)), http.StatusBadRequest)
	}
	// A run of wrong guesses at a live code locks, once.
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": alias}), http.StatusOK)
	code := e.smtp.code(t, alias)
	for i := range lockoutThreshold - 1 {
		expectStatus(t, guess(wrongCode(code, i)), http.StatusBadRequest)
	}
	expectStatus(t, guess(wrongCode(code, 50)), http.StatusTooManyRequests)
	clock.Advance(lockoutFor + time.Second)
	// The lock has ended: the next guesses, blind or at a new code, do not
	// relock it at once.
	expectStatus(t, guess(wrongCode(code, 51)), http.StatusBadRequest)
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": alias}), http.StatusOK)
	code = e.smtp.code(t, alias)
	for i := range lockoutThreshold - 1 {
		expectStatus(t, guess(wrongCode(code, 60+i)), http.StatusBadRequest)
	}
	// The owner, who has the code, still gets in.
	expectStatus(t, guess(code), http.StatusOK)
}

// sameResponse compares two responses byte for byte, but for Date.
func sameResponse(t *testing.T, what string, a, b response) {
	t.Helper()
	if a.status != b.status || string(a.body) != string(b.body) {
		t.Fatalf("%s: %d %s  vs  %d %s", what, a.status, a.body, b.status, b.body)
	}
	for k := range a.header {
		if k != "Date" && strings.Join(a.header[k], ",") != strings.Join(b.header[k], ",") {
			t.Fatalf("%s: header %s %q vs %q", what, k, a.header[k], b.header[k])
		}
	}
	if len(a.header) != len(b.header) {
		t.Fatalf("%s: headers %v vs %v", what, a.header, b.header)
	}
}

func TestNoAccountEnumeration(t *testing.T) {
	// Enough attempts on one code for the lockout below: only guesses at a
	// live code count toward it.
	e := newEnv(t, withConfig("register_new_users false\nmax_attempts 10"))
	// An account made before registration was closed.
	s, err := openSQLite(e.db)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Login(context.Background(), defaultRealm, Alias{Kind: KindEmail, Value: "known@example.com"}, true, time.Now()); err != nil {
		t.Fatal(err)
	}
	releaseSQLite(s)

	known := e.postForm("/auth/email/", map[string]string{"email": "known@example.com"})
	unknown := e.postForm("/auth/email/", map[string]string{"email": "unknown@example.com"})
	expectStatus(t, known, http.StatusOK)
	sameResponse(t, "code request", known, unknown)
	e.drain()
	if len(e.smtp.all()) != 1 {
		t.Fatalf("%d mails; only the known address may get one", len(e.smtp.all()))
	}
	code := e.smtp.code(t, "known@example.com")

	k := e.postForm("/auth/token/", map[string]string{"email": "known@example.com", "token": wrongCode(code, 1)})
	u := e.postForm("/auth/token/", map[string]string{"email": "unknown@example.com", "token": wrongCode(code, 1)})
	expectStatus(t, k, http.StatusBadRequest)
	sameResponse(t, "wrong code", k, u)

	// Limits and lockout behave alike too.
	k = e.postForm("/auth/email/", map[string]string{"email": "known@example.com"})
	u = e.postForm("/auth/email/", map[string]string{"email": "unknown@example.com"})
	expectStatus(t, k, http.StatusTooManyRequests)
	sameResponse(t, "send interval", k, u)
	for i := 2; i <= lockoutThreshold; i++ {
		k = e.postForm("/auth/token/", map[string]string{"email": "known@example.com", "token": wrongCode(code, i)})
		u = e.postForm("/auth/token/", map[string]string{"email": "unknown@example.com", "token": wrongCode(code, i)})
	}
	expectStatus(t, k, http.StatusTooManyRequests)
	sameResponse(t, "lockout", k, u)
}

// While the mail server refuses everything, code requests answer 503 for
// known and unknown addresses alike, or an outage would tell them apart.
func TestNoEnumerationDuringAnOutage(t *testing.T) {
	e := newEnv(t, withConfig("register_new_users false\nrate_limit {\n send_interval 0s\n per_alias 1000 1h\n per_ip 1000 1h\n}"))
	s, err := openSQLite(e.db)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Login(context.Background(), defaultRealm, Alias{Kind: KindEmail, Value: "known@example.com"}, true, now()); err != nil {
		t.Fatal(err)
	}
	releaseSQLite(s)

	e.smtp.setRejectMail(&smtp.SMTPError{Code: 451, Message: "try later"})
	known := e.untilFailing("/auth/email/", map[string]string{"email": "known@example.com"})
	unknown := e.postForm("/auth/email/", map[string]string{"email": "unknown@example.com"})
	sameResponse(t, "outage", known, unknown)

	e.smtp.setRejectMail(nil)
	clock.Advance(probeEvery)
	e.smtp.code(t, "known@example.com") // a retry got through
	eventually(t, "the channel to recover", func() bool {
		return e.postForm("/auth/email/", map[string]string{"email": "known@example.com"}).status == http.StatusOK
	})
	known = e.postForm("/auth/email/", map[string]string{"email": "known@example.com"})
	unknown = e.postForm("/auth/email/", map[string]string{"email": "unknown@example.com"})
	expectStatus(t, known, http.StatusOK)
	sameResponse(t, "after the outage", known, unknown)
}

func TestDemoUser(t *testing.T) {
	e := newEnv(t, withConfig("demo_user Review@Example.com 246810\nregister_new_users false\nrate_limit {\n per_ip 3 1h\n}"))
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "review@example.com"}), http.StatusOK)
	e.drain()
	if n := len(e.smtp.all()); n != 0 {
		t.Fatalf("the demo code was sent (%d mails)", n)
	}
	// Only for that alias.
	expectStatus(t, e.postForm("/auth/token/", map[string]string{"email": "someone@example.com", "token": "246810"}), http.StatusBadRequest)
	expectStatus(t, e.postForm("/auth/token/", map[string]string{"email": "review@example.com", "token": "246811"}), http.StatusBadRequest)
	r := e.postForm("/auth/token/", map[string]string{"email": "review@example.com", "token": "246810"})
	expectStatus(t, r, http.StatusOK)
	expectStatus(t, e.get("/app", bearer(r.str("token"))...), http.StatusOK)
	// Still under the per-IP limit: 1 code request + 2 demo exchanges so far.
	expectStatus(t, e.postForm("/auth/token/", map[string]string{"email": "review@example.com", "token": "246810"}), http.StatusTooManyRequests)
}

func TestBadInputIs400(t *testing.T) {
	e := newEnv(t)
	post := func(ct, body string) response {
		return e.do(http.MethodPost, "/auth/email/", http.Header{"Content-Type": {ct}}, strings.NewReader(body))
	}
	for name, tc := range map[string]struct{ ct, body string }{
		"invalid utf-8":     {"application/json", "{\"email\": \"a\xff@example.com\"}"},
		"nul byte":          {"application/json", `{"email": "a\u0000@example.com"}`},
		"nul in form":       {"application/x-www-form-urlencoded", "email=a%00%40example.com"},
		"number":            {"application/json", `{"email": 42}`},
		"array":             {"application/json", `{"email": ["a@example.com"]}`},
		"object":            {"application/json", `{"email": {"x": 1}}`},
		"unknown field":     {"application/json", `{"email": "a@example.com", "is_staff": "true"}`},
		"not an object":     {"application/json", `["a@example.com"]`},
		"two objects":       {"application/json", `{"email": "a@example.com"} {}`},
		"truncated":         {"application/json", `{"email": "a@exa`},
		"10 kB email":       {"application/json", `{"email": "` + strings.Repeat("a", 10000) + `@example.com"}`},
		"repeated field":    {"application/x-www-form-urlencoded", "email=a@example.com&email=b@example.com"},
		"bad form encoding": {"application/x-www-form-urlencoded", "email=%zz"},
		"header injection":  {"application/json", `{"email": "a@example.com\r\nBcc: all@example.com"}`},
		"bad multipart":     {"multipart/form-data; boundary=x", "--x\r\nnonsense"},
	} {
		r := post(tc.ct, tc.body)
		if r.status != http.StatusBadRequest || r.str("detail") == "" {
			t.Errorf("%s: %d %s", name, r.status, r.body)
		}
	}
	expectStatus(t, post("text/xml", "<email/>"), http.StatusUnsupportedMediaType)
	if n := len(e.smtp.all()); n != 0 {
		t.Fatalf("%d mails sent for bad input", n)
	}
}
