package passwordless

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddytest"
)

func TestAliasPatterns(t *testing.T) {
	email := func(s string) Alias { return Alias{Kind: KindEmail, Value: s} }
	mobile := func(s string) Alias { return Alias{Kind: KindMobile, Value: s} }
	for _, tc := range []struct {
		pattern string
		yes, no []Alias
	}{
		{"Alice@Partner.org", []Alias{email("alice@partner.org")}, []Alias{email("alice@partner.org.evil.test"), email("xalice@partner.org"), mobile("+15551234567")}},
		{"*@example.com", []Alias{email("a@example.com")}, []Alias{email("a@sub.example.com"), email("a@notexample.com"), email("a@example.com.evil.test")}},
		{"*@*.example.com", []Alias{email("a@sub.example.com"), email("a@x.y.example.com")}, []Alias{email("a@example.com"), email("a@notexample.com"), email("a@subexample.com")}},
		{"+15551234567", []Alias{mobile("+15551234567")}, []Alias{mobile("+155512345678"), email("x@example.com")}},
		{"+44*", []Alias{mobile("+447700900123"), mobile("+44")}, []Alias{mobile("+14470090012"), mobile("+4")}},
	} {
		pt, err := parsePattern(tc.pattern)
		if err != nil {
			t.Fatalf("%s: %v", tc.pattern, err)
		}
		for _, a := range tc.yes {
			if !pt.match(a) {
				t.Errorf("%s does not match %s", tc.pattern, a.Value)
			}
		}
		for _, a := range tc.no {
			if pt.match(a) {
				t.Errorf("%s matches %s", tc.pattern, a.Value)
			}
		}
	}
	for _, bad := range []string{"*", "*@", "*@*", "a*@example.com", "*@exa mple.com", "+44", "+0*", "+44*1", "5551234567", "@example.com", "*@*.*.com", "+1-555*"} {
		if bad == "+44" {
			continue // an exact number is fine; listed to keep the table honest
		}
		if _, err := parsePattern(bad); err == nil {
			t.Errorf("%q was accepted", bad)
		}
	}
}

func TestAllowPatternsBlackBox(t *testing.T) {
	tw := startTwilio(t)
	e := newEnv(t, withConfig("allow *@example.com *@*.corp.test Alice@Partner.org +44* +15551234567\nrate_limit {\n send_interval 0s\n}"), smsBlock(t, tw, ""))
	for alias, allowed := range map[string]bool{
		"bob@example.com":        true,
		"x@eng.corp.test":        true,
		"alice@partner.org":      true,
		"x@corp.test":            false,
		"eve@partner.org":        false,
		"x@example.com.evil.net": false,
		"x@notexample.com":       false,
		"x@sub.example.com":      false,
	} {
		before := len(e.smtp.all())
		r := e.postForm("/auth/email/", map[string]string{"email": alias})
		expectStatus(t, r, http.StatusOK)
		e.drain()
		if sent := len(e.smtp.all()) > before; sent != allowed {
			t.Errorf("%s: mail sent %t, want %t", alias, sent, allowed)
		}
	}
	tok := e.postForm("/auth/token/", map[string]string{"email": "x@eng.corp.test", "token": e.smtp.code(t, "x@eng.corp.test")}).str("token")
	expectStatus(t, e.get("/app", bearer(tok)...), http.StatusOK)

	for number, allowed := range map[string]bool{"+447700900123": true, "+15551234567": true, "+15551234568": false, "+33612345678": false} {
		before := len(tw.messages())
		expectStatus(t, e.postForm("/auth/mobile/", map[string]string{"mobile": number}), http.StatusOK)
		e.drain()
		if sent := len(tw.messages()) > before; sent != allowed {
			t.Errorf("%s: SMS sent %t, want %t", number, sent, allowed)
		}
	}
	r := e.postForm("/auth/token/", map[string]string{"mobile": "+447700900123", "token": tw.code(t, "+447700900123")})
	expectStatus(t, r, http.StatusOK)
}

// An alias outside the allow list gets what an unknown alias gets with
// registration closed, byte for byte, and nothing is sent; this holds for
// an existing user outside the list too.
func TestNotAllowedLooksUnknown(t *testing.T) {
	e := newEnv(t, withConfig("register_new_users false\nallow *@example.com"))
	s := e.store(t)
	for _, a := range []string{"in@example.com", "out@other.test"} {
		if _, err := s.CreateUser(context.Background(), defaultRealm, []Alias{{Kind: KindEmail, Value: a}}, nil, now()); err != nil {
			t.Fatal(err)
		}
	}
	unknown := e.postForm("/auth/email/", map[string]string{"email": "nobody@example.com"})
	expectStatus(t, unknown, http.StatusOK)
	for _, a := range []string{"out@other.test", "stranger@other.test"} {
		sameResponse(t, "code request for "+a, unknown, e.postForm("/auth/email/", map[string]string{"email": a}))
	}
	e.drain()
	if n := len(e.smtp.all()); n != 0 {
		t.Fatalf("%d mails sent", n)
	}
	unknown = e.postForm("/auth/token/", map[string]string{"email": "nobody@example.com", "token": "123456"})
	expectStatus(t, unknown, http.StatusBadRequest)
	for _, a := range []string{"out@other.test", "stranger@other.test"} {
		sameResponse(t, "exchange for "+a, unknown, e.postForm("/auth/token/", map[string]string{"email": a, "token": "123456"}))
	}
	// The one who is known and allowed does get a code.
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "in@example.com"}), http.StatusOK)
	e.smtp.code(t, "in@example.com")
}

// With registration open, an outsider's answer is that of a newcomer who
// may register, and nothing is sent to the outsider.
func TestNotAllowedWithOpenRegistration(t *testing.T) {
	e := newEnv(t, withConfig("allow *@example.com"))
	newcomer := e.postForm("/auth/email/", map[string]string{"email": "new@example.com"})
	sameResponse(t, "code request", newcomer, e.postForm("/auth/email/", map[string]string{"email": "new@other.test"}))
	e.drain()
	if all := e.smtp.all(); len(all) != 1 {
		t.Fatalf("%d mails; only the newcomer may get one", len(all))
	}
}

// store opens the env's SQLite file; in-process it is the handle Caddy uses.
func (e *env) store(t *testing.T) Store {
	t.Helper()
	s, err := openSQLite(e.db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { releaseSQLite(s) })
	return s
}

// within retries f until it holds or 5 seconds of real time have passed:
// the allow file is read again on a timer, not on the plugin's clock.
func within5s(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5 s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	// Written aside and renamed, as editors and config management do.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func tokenRoles(t *testing.T, tok string) []string {
	t.Helper()
	return tokenClaims(t, tok).Roles
}

// tokenSubject is the user id a token names.
func tokenSubject(t *testing.T, tok string) string {
	t.Helper()
	return tokenClaims(t, tok).Subject
}

// tokenClaims reads a token's claims without verifying it.
func tokenClaims(t *testing.T, tok string) Claims {
	t.Helper()
	parts := strings.Split(tok, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c Claims
	if err := json.Unmarshal(payload, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestAllowFileRolesHotReloadAndOffboarding(t *testing.T) {
	people := filepath.Join(t.TempDir(), "people.txt")
	writeFile(t, people, "# the team\n*@example.com staff   # everyone\nboss@example.com admin\n\n")
	e := newEnv(t, withConfig("allow_file "+people+"\nprotect /admin/* {\n role admin\n}\nprotect /*\nrate_limit {\n send_interval 0s\n}"))
	boss := e.login("boss@example.com")
	worker := e.login("worker@example.com").str("token")
	if roles := tokenRoles(t, boss.str("token")); strings.Join(roles, ",") != "admin,staff" {
		t.Fatalf("token roles %v", roles)
	}
	bossTok := boss.str("token")
	r := e.get("/app", bearer(bossTok)...)
	if r.str("roles") != "admin,staff" {
		t.Fatalf("upstream saw %s", r.body)
	}
	expectStatus(t, e.get("/admin/panel", bearer(bossTok)...), http.StatusOK)
	forbidden := e.get("/admin/panel", bearer(worker)...)
	expectStatus(t, forbidden, http.StatusForbidden)
	if string(forbidden.body) != `{"detail":"You do not have permission to perform this action."}`+"\n" {
		t.Fatalf("403 body %s", forbidden.body)
	}

	// Taking the admin line out takes the role away.
	writeFile(t, people, "*@example.com staff\n")
	within5s(t, "admin role removed", func() bool { return e.get("/admin/panel", bearer(bossTok)...).status == http.StatusForbidden })
	if r := e.get("/app", bearer(bossTok)...); r.str("roles") != "staff" {
		t.Fatalf("upstream saw %s", r.body)
	}

	// A broken edit, written in place, is logged and changes nothing.
	if err := os.WriteFile(people, []byte("*@example.com staff\nthis is not a pattern\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * allowFilePoll)
	if r := e.get("/app", bearer(bossTok)...); r.status != http.StatusOK || r.str("roles") != "staff" {
		t.Fatalf("after a broken edit: %d %s", r.status, r.body)
	}

	// Taking the domain out signs everyone out, refresh included, and
	// they cannot sign in again.
	writeFile(t, people, "someone@else.test\n")
	within5s(t, "offboarding", func() bool { return e.get("/app", bearer(bossTok)...).status == http.StatusUnauthorized })
	expectStatus(t, e.get("/app", bearer(worker)...), http.StatusUnauthorized)
	expectStatus(t, e.postForm("/auth/refresh", map[string]string{"refresh_token": boss.str("refresh_token")}), http.StatusUnauthorized)
	e.drain()
	before := len(e.smtp.all())
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "boss@example.com"}), http.StatusOK)
	e.drain()
	if len(e.smtp.all()) != before {
		t.Fatal("a code was sent to someone taken off the allow list")
	}
}

// A person taken off the allow file, then put back, must not find their
// old sessions alive again: being refused ends a session in the store,
// as /refresh already did.
func TestReAddedPersonDoesNotGetOldSessionsBack(t *testing.T) {
	people := filepath.Join(t.TempDir(), "people.txt")
	writeFile(t, people, "*@example.com\n")
	e := newEnv(t, withConfig("allow_file "+people+"\nrate_limit {\n send_interval 0s\n}"))
	tok := e.login("leaver@example.com").str("token")
	expectStatus(t, e.get("/app", bearer(tok)...), http.StatusOK)
	writeFile(t, people, "*@example.org\n")
	within5s(t, "taken off", func() bool { return e.get("/app", bearer(tok)...).status == http.StatusUnauthorized })
	writeFile(t, people, "*@example.com\n")
	// Long enough for the file to be read again and the session rechecked.
	time.Sleep(2*allowFilePoll + sessionRecheck)
	clock.Advance(sessionRecheck)
	expectStatus(t, e.get("/app", bearer(tok)...), http.StatusUnauthorized)
	// They can sign in again, with a new session.
	expectStatus(t, e.get("/app", bearer(e.login("leaver@example.com").str("token"))...), http.StatusOK)
}

func TestBrokenAllowFileFailsProvisioning(t *testing.T) {
	people := filepath.Join(t.TempDir(), "people.txt")
	writeFile(t, people, "# ok\n*@example.com staff\nalice@@example.com\n")
	site := fmt.Sprintf("http://localhost:9080 {\n passwordless {\n storage sqlite %s\n allow_file %s\n }\n respond ok\n}\n", filepath.Join(t.TempDir(), "pwl.db"), people)
	err := loadCaddyfile(t, site)
	if err == nil || !strings.Contains(err.Error(), people+":3:") {
		t.Fatalf("error does not name file and line: %v", err)
	}
	writeFile(t, people, "*@example.com admin,boss\n")
	if err := loadCaddyfile(t, site); err == nil || !strings.Contains(err.Error(), people+":1:") {
		t.Fatalf("a bad role name: %v", err)
	}
}

// loadCaddyfile adapts sites and loads them into the running test Caddy
// as `caddy run` or `caddy reload` would, and returns what failed. A
// config that fails leaves the running one in place.
func loadCaddyfile(t *testing.T, sites string) error {
	t.Helper()
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(global()+sites), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		return err
	}
	return loadConfig(t, string(cfg))
}

// loadConfig loads a JSON config into the running test Caddy.
func loadConfig(t *testing.T, cfg string) error {
	t.Helper()
	caddytest.NewTester(t).InitServer(global()+"http://localhost:9080 {\n respond ok\n}\n", "caddyfile")
	res, err := http.Post("http://localhost:2999/load", "application/json", strings.NewReader(cfg))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("%s", body)
	}
	return nil
}

func TestProtectRulesFirstMatchAnd403(t *testing.T) {
	people := filepath.Join(t.TempDir(), "people.txt")
	writeFile(t, people, "staff@example.com staff\n*@example.com\n*@other.test\n")
	e := newEnv(t, withConfig(`allow_file `+people+`
		protect /team/* {
			role staff
		}
		protect /team/lobby/*
		protect /docs/*
		protect /docs/secret/* {
			role admin
		}
		protect /reports/* {
			role finance
			email boss@example.com
		}
		protect /*
		public /health
		rate_limit {
			send_interval 0s
		}`))
	staff := e.login("staff@example.com").str("token")
	guest := e.login("guest@other.test").str("token")
	boss := e.login("boss@example.com").str("token")
	for _, tc := range []struct {
		tok, path string
		want      int
	}{
		{guest, "/team/lobby/x", http.StatusForbidden}, // /team/* comes first
		{staff, "/team/lobby/x", http.StatusOK},
		{guest, "/docs/secret/x", http.StatusOK}, // /docs/* comes first
		// A servlet backend reads /team/x here: every reading's first
		// rule must admit the user.
		{guest, "/docs/..;/team/x", http.StatusForbidden},
		{staff, "/docs/..;/team/x", http.StatusOK},
		{guest, "/reports/q3", http.StatusForbidden},
		{boss, "/reports/q3", http.StatusOK}, // by email
		{staff, "/reports/q3", http.StatusForbidden},
		{guest, "/anything", http.StatusOK},
		{"", "/health", http.StatusOK},
		{"", "/team/x", http.StatusUnauthorized},
	} {
		var h []string
		if tc.tok != "" {
			h = bearer(tc.tok)
		}
		before := e.upstream.requests()
		r := e.get(tc.path, h...)
		if r.status != tc.want {
			t.Errorf("%s: %d, want %d (%s)", tc.path, r.status, tc.want, r.body)
		}
		if tc.want != http.StatusOK && e.upstream.requests() != before {
			t.Errorf("%s: a refused request reached the upstream", tc.path)
		}
	}

	// A role stored by the operator counts, and taking it away counts
	// within the session recheck.
	s := e.store(t)
	u, err := s.UserByAlias(context.Background(), defaultRealm, Alias{Kind: KindEmail, Value: "guest@other.test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetRoles(context.Background(), u.ID, []string{"finance"}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(sessionRecheck)
	expectStatus(t, e.get("/reports/q3", bearer(guest)...), http.StatusOK)
	if err := s.SetRoles(context.Background(), u.ID, nil); err != nil {
		t.Fatal(err)
	}
	clock.Advance(sessionRecheck)
	expectStatus(t, e.get("/reports/q3", bearer(guest)...), http.StatusForbidden)
}

// A browser navigation that is not permitted gets a page that offers to
// sign out and in as someone else.
func TestForbiddenPageSignsOut(t *testing.T) {
	e := newEnv(t, withConfig("protect /admin/* {\n role admin\n}\nprotect /*"))
	expectStatus(t, e.postLogin(map[string]string{"alias": "guest@example.com"}), http.StatusOK)
	r := e.postLogin(map[string]string{"alias": "guest@example.com", "code": e.smtp.code(t, "guest@example.com"), "next": "/admin/users"})
	expectStatus(t, r, http.StatusSeeOther)
	c := sessionCookieOf(t, r)
	cookie := c.Name + "=" + c.Value

	page := e.get("/admin/users?tab=2", "Cookie", cookie, "Accept", "text/html")
	expectStatus(t, page, http.StatusForbidden)
	body := string(page.body)
	if !strings.HasPrefix(page.header.Get("Content-Type"), "text/html") || !strings.Contains(body, "guest@example.com") ||
		!strings.Contains(body, `action="/auth/logout"`) || !strings.Contains(body, `value="/admin/users?tab=2"`) {
		t.Fatalf("403 page: %v\n%s", page.header, body)
	}
	if csp := page.header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Fatalf("CSP %q", csp)
	}
	// The same request from an API client gets JSON.
	expectStatus(t, e.get("/admin/users", "Cookie", cookie), http.StatusForbidden)

	out := e.postForm("/auth/logout", map[string]string{"next": "/admin/users?tab=2"}, "Cookie", cookie, "Origin", testBase)
	expectStatus(t, out, http.StatusSeeOther)
	if loc := out.header.Get("Location"); loc != "/auth/login?next="+url.QueryEscape("/admin/users?tab=2") {
		t.Fatalf("Location %q", loc)
	}
	if sc := out.header.Get("Set-Cookie"); !strings.Contains(sc, "Max-Age=0") {
		t.Fatalf("cookie not cleared: %q", sc)
	}
	expectStatus(t, e.get("/app", "Cookie", cookie), http.StatusUnauthorized)
	// Another site cannot sign the visitor out.
	expectStatus(t, e.postForm("/auth/logout", nil, "Cookie", cookie, "Origin", "https://evil.example"), http.StatusForbidden)
}

func TestSpoofedRolesStripped(t *testing.T) {
	e := newEnv(t, withConfig("public /open/*"))
	tok := e.login("plain@example.com").str("token")
	forged := []string{"X-Auth-User-Roles", "admin"}
	for _, path := range []string{"/open/x", "/private"} {
		r := e.get(path, append(forged, bearer(tok)...)...)
		expectStatus(t, r, http.StatusOK)
		if r.str("roles") != "" || len(e.upstream.lastHeader().Values("X-Auth-User-Roles")) != 0 {
			t.Fatalf("%s: a forged role reached the upstream: %s", path, r.body)
		}
	}
	// Sent as a trailer, after the body.
	req, _ := http.NewRequest(http.MethodPost, testBase+"/private", io.MultiReader(strings.NewReader("body")))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Trailer = http.Header{"X-Auth-User-Roles": {"admin"}, "X-Auth-User-Email": {"admin@example.com"}, "X-Checksum": {"abc"}}
	seen := e.upstream.requests()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK || e.upstream.requests() != seen+1 {
		t.Fatalf("status %d; the upstream got %d requests, want 1", res.StatusCode, e.upstream.requests()-seen)
	}
	tr := e.upstream.lastTrailer()
	if tr.Get("X-Checksum") != "abc" {
		t.Fatalf("the upstream got no trailers at all (%v): the check below would prove nothing", tr)
	}
	if tr.Get("X-Auth-User-Roles") != "" || tr.Get("X-Auth-User-Email") != "" {
		t.Fatalf("forged trailers reached the upstream: %v", tr)
	}
}

func TestLogoutAll(t *testing.T) {
	e := newEnv(t, withConfig("rate_limit {\n send_interval 0s\n}"))
	var sessions []response
	for range 3 {
		sessions = append(sessions, e.login("many@example.com"))
	}
	other := e.login("other@example.com").str("token")
	expectStatus(t, e.postForm("/auth/logout/all", nil), http.StatusUnauthorized)
	expectStatus(t, e.postForm("/auth/logout/all/", nil, bearer(sessions[0].str("token"))...), http.StatusNoContent)
	for i, s := range sessions {
		expectStatus(t, e.get("/app", bearer(s.str("token"))...), http.StatusUnauthorized)
		if r := e.postForm("/auth/refresh", map[string]string{"refresh_token": s.str("refresh_token")}); r.status != http.StatusUnauthorized {
			t.Fatalf("session %d refreshed after logout/all: %d", i, r.status)
		}
	}
	expectStatus(t, e.get("/app", bearer(other)...), http.StatusOK)
}

// A disabled user's sessions stop working and its sign-in is answered as
// an unknown alias's; enabled again, it signs in.
func TestDisabledUser(t *testing.T) {
	e := newEnv(t, withConfig("register_new_users false\nrate_limit {\n send_interval 0s\n}"))
	s := e.store(t)
	ctx := context.Background()
	u, err := s.CreateUser(ctx, defaultRealm, []Alias{{Kind: KindEmail, Value: "dis@example.com"}}, nil, now())
	if err != nil {
		t.Fatal(err)
	}
	r := e.login("dis@example.com")
	if err := s.SetDisabled(ctx, u.ID, true); err != nil {
		t.Fatal(err)
	}
	clock.Advance(sessionRecheck)
	expectStatus(t, e.get("/app", bearer(r.str("token"))...), http.StatusUnauthorized)
	expectStatus(t, e.postForm("/auth/refresh", map[string]string{"refresh_token": r.str("refresh_token")}), http.StatusUnauthorized)
	e.drain()
	before := len(e.smtp.all())
	unknown := e.postForm("/auth/email/", map[string]string{"email": "nobody@example.com"})
	sameResponse(t, "code request", unknown, e.postForm("/auth/email/", map[string]string{"email": "dis@example.com"}))
	e.drain()
	if len(e.smtp.all()) != before {
		t.Fatal("a code was sent to a disabled user")
	}
	if err := s.SetDisabled(ctx, u.ID, false); err != nil {
		t.Fatal(err)
	}
	e.login("dis@example.com")
}

// realmSites starts one Caddy with a site per block on one SQLite file,
// the first on testPort and the next ones after it, each with the jwt
// block.
func realmSites(t *testing.T, mail *smtpServer, up *upstream, db, jwt string, blocks ...string) {
	t.Helper()
	var sites []string
	for i, b := range blocks {
		sites = append(sites, fmt.Sprintf(`http://localhost:%d {
	passwordless {
		storage sqlite %s
		%s
		%s
		%s
	}
	reverse_proxy %s
}
`, testPort+i, db, mail.emailBlock(), jwt, b, strings.TrimPrefix(up.URL, "http://")))
	}
	newCluster(t, sites...)
}

// Realms on one store, with one signing secret or with the keys each
// realm generates: a token of one is refused by the other, and a sign-up
// on the open one does not open the invite-only one. Blocks of one realm
// are one sign-in.
func TestRealmIsolation(t *testing.T) {
	for name, jwt := range map[string]string{
		"HS256 secret":        "jwt {\n\t\t\talgorithm HS256\n\t\t\tsecret " + strings.Repeat("r", 32) + "\n\t\t}",
		"generated EdDSA key": "jwt {\n\t\t\talgorithm EdDSA\n\t\t}",
	} {
		t.Run(name, func(t *testing.T) { testRealmIsolation(t, jwt) })
	}
}

func testRealmIsolation(t *testing.T, jwt string) {
	mail, up := startSMTP(t), startUpstream(t)
	db := filepath.Join(t.TempDir(), "pwl.db")
	realmSites(t, mail, up, db, jwt, "realm public", "realm team\nregister_new_users false", "realm public")
	public, team, sso := "http://localhost:9080", "http://localhost:9081", "http://localhost:9082"
	c := &cluster{t: t}
	post, get := c.post, c.get
	expectStatus(t, post(public, "/auth/email/", url.Values{"email": {"x@example.com"}}, ""), http.StatusOK)
	r := post(public, "/auth/token/", url.Values{"email": {"x@example.com"}, "token": {mail.code(t, "x@example.com")}}, "")
	expectStatus(t, r, http.StatusOK)
	tok := r.str("token")
	expectStatus(t, get(public, "/app", tok), http.StatusOK)
	expectStatus(t, get(sso, "/app", tok), http.StatusOK) // same realm: single sign-on
	expectStatus(t, get(team, "/app", tok), http.StatusUnauthorized)
	expectStatus(t, get(team, "/auth/me", tok), http.StatusUnauthorized)
	expectStatus(t, post(team, "/auth/refresh", url.Values{"refresh_token": {r.str("refresh_token")}}, ""), http.StatusUnauthorized)
	if strings.Contains(jwt, "EdDSA") {
		// Each realm signs with a key of its own.
		s, err := openSQLite(db)
		if err != nil {
			t.Fatal(err)
		}
		defer releaseSQLite(s)
		var keys int
		if err := s.db.QueryRowContext(t.Context(), `SELECT COUNT(DISTINCT value) FROM secrets WHERE name LIKE '%jwt_key:EdDSA'`).Scan(&keys); err != nil || keys != 2 {
			t.Fatalf("%d distinct keys for two realms: %v", keys, err)
		}
	}

	// The user made on the open site does not exist on the invite-only one.
	drain(t, db)
	before := len(mail.all())
	expectStatus(t, post(team, "/auth/email/", url.Values{"email": {"x@example.com"}}, ""), http.StatusOK)
	drain(t, db)
	if len(mail.all()) != before {
		t.Fatal("the invite-only realm sent a code to a user of the open one")
	}
	// Limits are the realm's own: the open site's send interval does not
	// hold the team site back, or the other way round.
	expectStatus(t, post(sso, "/auth/email/", url.Values{"email": {"x@example.com"}}, ""), http.StatusTooManyRequests)
}

func TestRealmConflictRefused(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pwl.db")
	people := filepath.Join(t.TempDir(), "people.txt")
	writeFile(t, people, "*@example.com\n")
	block := func(port int, extra string) string {
		return fmt.Sprintf("http://localhost:%d {\n passwordless {\n storage sqlite %s\n email {\n log\n }\n %s\n }\n respond ok\n}\n", port, db, extra)
	}
	for name, tc := range map[string]struct{ a, b string }{
		"register_new_users": {"", "register_new_users false"},
		"allow":              {"allow *@example.com", "allow *@example.org"},
		"allow_file":         {"allow_file " + people, ""},
		"demo_user":          {"demo_user demo@example.com 123456", "demo_user demo@example.com 654321"},
	} {
		err := loadCaddyfile(t, block(9080, tc.a)+block(9081, tc.b))
		if err == nil || !strings.Contains(err.Error(), `realm "default"`) || !strings.Contains(err.Error(), "Caddyfile:10 and Caddyfile:20") {
			t.Errorf("%s: %v", name, err)
		}
		if strings.Contains(fmt.Sprint(err), "654321") || strings.Contains(fmt.Sprint(err), "123456") {
			t.Errorf("%s: a demo code in the error: %v", name, err)
		}
	}
	// A JSON config is refused as well, when the handlers provision.
	handler := func(reg bool) string {
		return fmt.Sprintf(`{"handler": "passwordless", "storage": {"driver": "sqlite", "dsn": %q}, "email": {"log": true}, "register_new_users": %t}`, db, reg)
	}
	err := loadConfig(t, fmt.Sprintf(`{"admin": {"listen": "localhost:2999"}, "apps": {"http": {"http_port": 9080, "servers": {"s": {"listen": [":9080"], "automatic_https": {"disable": true},
		"routes": [{"match": [{"path": ["/a/*"]}], "handle": [%s]}, {"handle": [%s]}]}}}}}`, handler(true), handler(false)))
	if err == nil || !strings.Contains(err.Error(), "disagree") || !strings.Contains(err.Error(), "register_new_users false") {
		t.Errorf("JSON: %v", err)
	}

	// Different realms, or the same rules, are fine.
	for _, cf := range []string{block(9080, "realm a") + block(9081, "realm b\nregister_new_users false"), block(9080, "allow *@example.com") + block(9081, "allow *@EXAMPLE.com")} {
		if err := loadCaddyfile(t, cf); err != nil {
			t.Fatal(err)
		}
	}
}

// Two instances on one PostgreSQL, each with its own cache and its own
// reading of the allow file: taking someone out, by the file or by
// disabling them in the store, holds on both within 5 seconds.
func TestOffboardingAcrossInstances(t *testing.T) {
	dsn := postgresDSN(t)
	mail, up := startSMTP(t), startUpstream(t)
	people := filepath.Join(t.TempDir(), "people.txt")
	writeFile(t, people, "*@example.com staff\nleaver@example.com admin\n")
	c := twoInstances(t, dsn, mail, "allow_file "+people+"\n\t\trate_limit {\n\t\t\tsend_interval 0s\n\t\t}",
		"reverse_proxy "+strings.TrimPrefix(up.URL, "http://"))
	a, b := "http://localhost:9080", "http://localhost:9081"
	login := func(email string) string {
		expectStatus(t, c.post(a, "/auth/email", url.Values{"email": {email}}, ""), http.StatusOK)
		r := c.post(b, "/auth/token", url.Values{"email": {email}, "token": {mail.code(t, email)}}, "")
		expectStatus(t, r, http.StatusOK)
		return r.str("token")
	}
	get := func(base, tok string) response { return c.get(base, "/app", tok) }
	leaver, disabled := login("leaver@example.com"), login("disabled@example.com")
	for _, base := range []string{a, b} {
		if r := get(base, leaver); r.str("roles") != "admin,staff" {
			t.Fatalf("%s: upstream saw %s", base, r.body)
		}
		expectStatus(t, get(base, disabled), http.StatusOK)
	}

	writeFile(t, people, "*@example.com staff\n")
	for _, base := range []string{a, b} {
		within5s(t, base+": role removed", func() bool { return get(base, leaver).str("roles") == "staff" })
	}
	s, err := openPostgres(dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer releasePostgres(s)
	u, err := s.UserByAlias(context.Background(), defaultRealm, Alias{Kind: KindEmail, Value: "disabled@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetDisabled(context.Background(), u.ID, true); err != nil {
		t.Fatal(err)
	}
	writeFile(t, people, "")
	for _, base := range []string{a, b} {
		within5s(t, base+": allow line removed", func() bool { return get(base, leaver).status == http.StatusUnauthorized })
		within5s(t, base+": user disabled", func() bool { return get(base, disabled).status == http.StatusUnauthorized })
	}
}

func TestRolesPlaceholder(t *testing.T) {
	people := filepath.Join(t.TempDir(), "people.txt")
	writeFile(t, people, "*@example.com staff ops\n")
	e := newEnv(t, withConfig("allow_file "+people), withSite(`header >X-Seen-Roles "{http.auth.user.roles}"`))
	tok := e.login("ph@example.com").str("token")
	r := e.get("/x", bearer(tok)...)
	expectStatus(t, r, http.StatusOK)
	if got := r.header.Get("X-Seen-Roles"); got != "ops,staff" || r.str("roles") != "ops,staff" {
		t.Fatalf("placeholder %q, header %q", got, r.str("roles"))
	}
}

// The JSON config says the same as the Caddyfile, and its mistakes fail
// provisioning with the rule named.
func TestProtectRulesJSON(t *testing.T) {
	handler := func(rules string) string {
		return fmt.Sprintf(`{"admin": {"listen": "localhost:2999"}, "apps": {"http": {"http_port": 9080, "servers": {"s": {"listen": [":9080"], "automatic_https": {"disable": true},
		"routes": [{"handle": [{"handler": "passwordless", "storage": {"driver": "sqlite", "dsn": %q}, "email": {"log": true}, "protect_rules": %s}, {"handler": "static_response", "body": "ok"}]}]}}}}}`,
			filepath.Join(t.TempDir(), "pwl.db"), rules)
	}
	for rules, want := range map[string]string{
		`[{"paths": ["/admin/*"], "emails": ["+44*"]}]`: `protect /admin/*: \"+44*\" is not a pattern of email addresses`,
		`[{"paths": ["/admin/*"], "roles": ["a b"]}]`:   `protect /admin/*: \"a b\" is not a role name`,
		`[{"paths": [], "roles": ["admin"]}]`:           `a rule needs paths`,
		`[{"paths": ["/x/*"], "mobiles": ["*@x.com"]}]`: `is not a pattern of mobile numbers`,
	} {
		if err := loadConfig(t, handler(rules)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v", rules, err)
		}
	}
	if err := loadConfig(t, handler(`[{"paths": ["/admin/*"], "roles": ["admin"]}, {"paths": ["/*"]}]`)); err != nil {
		t.Fatal(err)
	}
	r, err := http.Get("http://localhost:9080/admin/x")
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a rule's path without a token: %d", r.StatusCode)
	}
}

func TestParseAllowFile(t *testing.T) {
	lines, err := parseAllowFile("people.txt", []byte("# team\n\n*@example.com staff ops # all of us\nodd#name@example.com\n+44*\tuk\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 3 || strings.Join(lines[0].roles, ",") != "ops,staff" || lines[1].pattern.exact != "odd#name@example.com" ||
		lines[2].pattern.prefix != "+44" || strings.Join(lines[2].roles, ",") != "uk" {
		t.Fatalf("%+v", lines)
	}
	for content, want := range map[string]string{
		"ok@example.com\n\n*@\n":       "people.txt:3:",
		"ok@example.com admin,root\n":  "people.txt:1:",
		"*@example.com staff\n+44 *\n": "people.txt:2:",
		"\n\n\n\nbob@@example.com x\n": "people.txt:5:",
	} {
		if _, err := parseAllowFile("people.txt", []byte(content)); err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%q: %v, want %s", content, err, want)
		}
	}
}

// Codes, limits, failures and secrets of the default realm keep the keys
// they had before realms, so existing data stays valid; other realms'
// keys cannot collide with them.
func TestRealmKey(t *testing.T) {
	if realmKey(defaultRealm, "email:a@example.com") != "email:a@example.com" || realmKey(defaultRealm, "code_hmac_key") != "code_hmac_key" {
		t.Fatal("the default realm's keys changed")
	}
	if k := realmKey("team", "email:a@example.com"); k != "realm:team/email:a@example.com" {
		t.Fatalf("team key %q", k)
	}
}

// An address may hold a `#`, and a comment may follow it; an editor's byte
// order mark is not part of the first pattern. Neither refuses the file,
// so a removal made in the same edit applies.
func TestAllowFileHashesAndByteOrderMark(t *testing.T) {
	people := filepath.Join(t.TempDir(), "people.txt")
	writeFile(t, people, "\uFEFF*@example.com staff\nodd#name@other.test admin # the odd one\nleaver@other.test\n")
	e := newEnv(t, withConfig("allow_file "+people+"\nrate_limit {\n send_interval 0s\n}"))
	odd := e.login("odd#name@other.test").str("token")
	if r := e.get("/app", bearer(odd)...); r.str("roles") != "admin" {
		t.Fatalf("upstream saw %s", r.body)
	}
	if r := e.get("/app", bearer(e.login("w@example.com").str("token"))...); r.str("roles") != "staff" {
		t.Fatalf("the line after the byte order mark: upstream saw %s", r.body)
	}
	leaver := e.login("leaver@other.test").str("token")
	expectStatus(t, e.get("/app", bearer(leaver)...), http.StatusOK)

	writeFile(t, people, "\uFEFF# the team\n*@example.com staff\nodd#name@other.test admin # the odd one\n")
	within5s(t, "leaver removed", func() bool { return e.get("/app", bearer(leaver)...).status == http.StatusUnauthorized })
	expectStatus(t, e.get("/app", bearer(odd)...), http.StatusOK)
}

// loadWithin loads sites as loadCaddyfile does and fails the test if that
// takes longer than d: a read that blocks must not hold a reload.
func loadWithin(t *testing.T, d time.Duration, sites string) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- loadCaddyfile(t, sites) }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		t.Fatalf("loading the config took more than %s", d)
		return nil
	}
}

// An allow file that is a FIFO, or an endless device, fails the config
// at once with its name; one that turns into a FIFO later is logged, the
// last good version stays, and a reload is not held.
func TestAllowFileMustBeARegularFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.txt")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	zero := filepath.Join(dir, "zero.txt")
	if err := os.Symlink("/dev/zero", zero); err != nil {
		t.Fatal(err)
	}
	site := func(file string) string {
		return fmt.Sprintf("http://localhost:9080 {\n passwordless {\n storage sqlite %s\n email {\n log\n }\n allow_file %s\n }\n respond ok\n}\n", filepath.Join(dir, "pwl.db"), file)
	}
	for _, file := range []string{fifo, zero} {
		err := loadWithin(t, 10*time.Second, site(file))
		if err == nil || !strings.Contains(err.Error(), file+" is not a regular file") {
			t.Errorf("%s: %v", file, err)
		}
	}

	people := filepath.Join(dir, "people.txt")
	writeFile(t, people, "*@example.com\n")
	e := newEnv(t, withConfig("allow_file "+people))
	tok := e.login("a@example.com").str("token")
	if err := syscall.Mkfifo(people+".new", 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(people+".new", people); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * allowFilePoll)
	expectStatus(t, e.get("/app", bearer(tok)...), http.StatusOK)
	if err := loadWithin(t, 10*time.Second, "http://localhost:9080 {\n respond ok\n}\n"); err != nil {
		t.Fatal(err)
	}
}

// linesAdmit is what the allow lines say of a, read one by one: whether
// one fits, and the roles of every line that fits.
func linesAdmit(lines []allowLine, a Alias) (bool, []string) {
	var roles []string
	admitted := false
	for _, l := range lines {
		if l.pattern.match(a) {
			admitted = true
			roles = append(roles, l.roles...)
		}
	}
	return admitted, roles
}

// The index answers what the patterns say, for every kind of line, with
// the roles of every line that fits.
func TestAllowIndexMatchesPatterns(t *testing.T) {
	lines, err := parseAllowFile("people.txt", []byte("alice@partner.org a\n*@example.com b\n*@*.example.com c\n+15551234567 d\n+44* e\n+4477* f\nx@sub.example.com g\n"))
	if err != nil {
		t.Fatal(err)
	}
	ix := newAllowIndex(lines)
	for _, a := range []Alias{
		{KindEmail, "alice@partner.org"}, {KindEmail, "alice@partner.org.evil.test"}, {KindEmail, "a@example.com"},
		{KindEmail, "a@sub.example.com"}, {KindEmail, "x@sub.example.com"}, {KindEmail, "a@x.y.example.com"},
		{KindEmail, "a@notexample.com"}, {KindEmail, "a@subexample.com"}, {KindEmail, "a@example.com.evil.test"},
		{KindMobile, "+15551234567"}, {KindMobile, "+155512345678"}, {KindMobile, "+447700900123"},
		{KindMobile, "+44"}, {KindMobile, "+4"}, {KindMobile, "+14470090012"}, {KindEmail, ""}, {KindMobile, "+15551234567@x"},
	} {
		admitted, want := linesAdmit(lines, a)
		ok, roles := ix.lookup(a)
		slices.Sort(roles)
		if ok != admitted || strings.Join(roles, ",") != strings.Join(want, ",") {
			t.Errorf("%v: index says %t %v, patterns %t %v", a, ok, roles, admitted, want)
		}
	}
}

// One store reached by two spellings is one store: a SQLite file through
// a symlink, a PostgreSQL database through another host name and
// parameters. Blocks on it that disagree on who may sign in are refused.
func TestRealmConflictSeesThroughSpellings(t *testing.T) {
	block := func(port int, storage, extra string) string {
		return fmt.Sprintf("http://localhost:%d {\n passwordless {\n %s\n email {\n log\n }\n %s\n }\n respond ok\n}\n", port, storage, extra)
	}
	t.Run("sqlite symlink", func(t *testing.T) {
		dir := t.TempDir()
		db, link := filepath.Join(dir, "pwl.db"), filepath.Join(dir, "link.db")
		if err := os.Symlink(db, link); err != nil {
			t.Fatal(err)
		}
		err := loadCaddyfile(t, block(9080, "storage sqlite "+db, "")+block(9081, "storage sqlite "+link, "register_new_users false"))
		if err == nil || !strings.Contains(err.Error(), "disagree on who may sign in") {
			t.Fatalf("one file through a symlink: %v", err)
		}
		// Two files are two stores.
		if err := loadCaddyfile(t, block(9080, "storage sqlite "+db, "")+block(9081, "storage sqlite "+filepath.Join(dir, "other.db"), "register_new_users false")); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("postgres", func(t *testing.T) {
		dsn := postgresDSN(t)
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		other := *u
		if host, port, ok := strings.Cut(u.Host, ":"); ok && host == "127.0.0.1" {
			other.Host = "localhost:" + port
		}
		q := other.Query()
		q.Set("application_name", "second")
		other.RawQuery = q.Encode()
		err = loadCaddyfile(t, block(9080, fmt.Sprintf("storage postgres %q", dsn), "")+block(9081, fmt.Sprintf("storage postgres %q", other.String()), "register_new_users false"))
		if err == nil || !strings.Contains(err.Error(), "disagree on who may sign in") {
			t.Fatalf("one database through two connection strings: %v", err)
		}
	})
}
