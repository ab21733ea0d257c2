package passwordless

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// caddyMainEnv makes the test binary run as caddy (see TestMain).
const caddyMainEnv = "PWL_TEST_CADDY_MAIN"

// cli runs `caddy passwordless` as its own process, with a config file.
type cli struct {
	t      *testing.T
	config string
	env    []string
}

type cliResult struct {
	stdout, stderr string
	code           int
}

func (c *cli) run(args ...string) cliResult {
	c.t.Helper()
	exe, err := os.Executable()
	if err != nil {
		c.t.Fatal(err)
	}
	args = append([]string{"passwordless"}, args...)
	if c.config != "" {
		args = append(args, "--config", c.config)
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), caddyMainEnv+"=1")
	cmd.Env = append(cmd.Env, c.env...)
	cmd.Dir = c.t.TempDir()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	r := cliResult{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	case err != nil:
		c.t.Fatalf("running %v: %v", args, err)
	}
	return r
}

// ok runs a command that must succeed and returns what it printed.
func (c *cli) ok(args ...string) string {
	c.t.Helper()
	r := c.run(args...)
	if r.code != 0 {
		c.t.Fatalf("%v: exit %d; stderr: %s", args, r.code, r.stderr)
	}
	return r.stdout
}

// fails runs a command that must fail with status 1 and one line on
// stderr, and returns that line.
func (c *cli) fails(args ...string) string {
	c.t.Helper()
	r := c.run(args...)
	if r.code != 1 {
		c.t.Fatalf("%v: exit %d, want 1; stdout: %s; stderr: %s", args, r.code, r.stdout, r.stderr)
	}
	if lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n"); len(lines) != 1 || lines[0] == "" {
		c.t.Fatalf("%v: stderr is not one line: %q", args, r.stderr)
	}
	return r.stderr
}

// cliSite is a Caddyfile with one passwordless handler whose store is
// given by a storage subdirective. The command never binds its address.
func cliSite(t *testing.T, storage, extra string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "Caddyfile")
	body := fmt.Sprintf(`{
	admin off
}
http://localhost:9080 {
	passwordless {
		%s
		email {
			log
		}
		%s
	}
	respond "ok"
}
`, storage, extra)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// cliStore is a store, as a test opened it, and how a Caddyfile names it.
type cliStore struct {
	Store
	storage string // the Caddyfile subdirective
}

// eachStore runs f on a fresh SQLite file and, when PWL_TEST_POSTGRES is
// set, on a fresh PostgreSQL schema.
func eachStore(t *testing.T, f func(t *testing.T, s cliStore)) {
	t.Run("sqlite", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "pwl.db")
		s, err := openSQLite(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { releaseSQLite(s) })
		f(t, cliStore{Store: s, storage: "storage sqlite " + path})
	})
	t.Run("postgres", func(t *testing.T) {
		dsn := postgresDSN(t)
		s, err := openPostgres(dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { releasePostgres(s) })
		f(t, cliStore{Store: s, storage: fmt.Sprintf("storage postgres %q", dsn)})
	})
}

func expectContains(t *testing.T, got string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Fatalf("%q does not contain %q", got, w)
		}
	}
}

func TestCommandNeverCreatesAStore(t *testing.T) {
	t.Run("sqlite file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "typo.db")
		c := &cli{t: t, config: cliSite(t, "storage sqlite "+path, "")}
		expectContains(t, c.fails("users", "list"), "no database at "+path)
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("the command made %s: %v", path, err)
		}
	})
	t.Run("default file in the data directory", func(t *testing.T) {
		data := t.TempDir()
		c := &cli{t: t, config: cliSite(t, "", ""), env: []string{"XDG_DATA_HOME=" + data}}
		want := filepath.Join(data, "caddy", "passwordless.db")
		expectContains(t, c.fails("users", "add", "new@example.com"), "no database at "+want)
		if _, err := os.Stat(want); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("the command made %s: %v", want, err)
		}
	})
	t.Run("postgres schema", func(t *testing.T) {
		// The test server trusts local connections: any password does.
		const password = "S3cret-Passw0rd"
		dsn := strings.Replace(postgresDSN(t), "://postgres@", "://postgres:"+password+"@", 1)
		c := &cli{t: t, config: cliSite(t, "storage postgres {env.PWL_CLI_DSN}", ""), env: []string{"PWL_CLI_DSN=" + dsn}}
		line := c.fails("users", "list")
		_, _, name, _ := postgresConfig(dsn)
		expectContains(t, line, "no passwordless store in "+name)
		exists, _, err := postgresStoreExists(context.Background(), dsn)
		if err != nil || exists {
			t.Fatalf("after the command: exists %v, %v", exists, err)
		}
		// Nor when the server cannot be reached.
		u, _ := url.Parse(dsn)
		u.Host = "127.0.0.1:1"
		c.env = []string{"PWL_CLI_DSN=" + u.String()}
		line += c.fails("users", "list")
		expectContains(t, line, "postgres://127.0.0.1:1/")
		if strings.Contains(line, password) {
			t.Fatalf("the password was printed: %s", line)
		}
	})
}

func TestCommandFindsTheStoreOfTheConfig(t *testing.T) {
	t.Run("no config file", func(t *testing.T) {
		c := &cli{t: t, config: filepath.Join(t.TempDir(), "Caddyfile")}
		expectContains(t, c.fails("users", "list"), "reading config", "Caddyfile")
	})
	t.Run("default ./Caddyfile", func(t *testing.T) {
		c := &cli{t: t} // runs in an empty directory
		expectContains(t, c.fails("users", "list"), "reading config", "Caddyfile", "--config")
	})
	t.Run("broken Caddyfile", func(t *testing.T) {
		c := &cli{t: t, config: cliSite(t, "storage sqlite", "")}
		expectContains(t, c.fails("users", "list"), "Caddyfile:6")
	})
	t.Run("--adapter", func(t *testing.T) {
		db := filepath.Join(t.TempDir(), "pwl.db")
		s, err := openSQLite(db)
		if err != nil {
			t.Fatal(err)
		}
		defer releaseSQLite(s)
		// Not named like a Caddyfile: without --adapter it is read as JSON.
		path := filepath.Join(t.TempDir(), "site.conf")
		b, _ := os.ReadFile(cliSite(t, "storage sqlite "+db, ""))
		os.WriteFile(path, b, 0o600)
		c := &cli{t: t, config: path}
		expectContains(t, c.fails("users", "list"), "is not valid JSON", "--adapter")
		c.ok("users", "list", "--adapter", "caddyfile")
	})
	t.Run("no handler", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "Caddyfile")
		os.WriteFile(path, []byte("http://localhost:9080 {\n\trespond ok\n}\n"), 0o600)
		c := &cli{t: t, config: path}
		expectContains(t, c.fails("users", "list"), "no passwordless handler in "+path)
	})
	t.Run("env placeholder in the DSN", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "env.db")
		s, err := openSQLite(path)
		if err != nil {
			t.Fatal(err)
		}
		defer releaseSQLite(s)
		c := &cli{t: t, config: cliSite(t, "storage sqlite {env.PWL_CLI_DB}", ""), env: []string{"PWL_CLI_DB=" + path}}
		c.ok("lockouts", "clear", "someone@example.com")
	})
	t.Run("several realms in JSON", func(t *testing.T) {
		dir := t.TempDir()
		for _, n := range []string{"a.db", "b.db"} {
			s, err := openSQLite(filepath.Join(dir, n))
			if err != nil {
				t.Fatal(err)
			}
			defer releaseSQLite(s)
		}
		handler := func(realm, db string) string {
			return fmt.Sprintf(`{"handler": "passwordless", "realm": %q, "storage": {"dsn": %q}}`, realm, filepath.Join(dir, db))
		}
		// One handler is inside a subroute, as the Caddyfile's handle
		// blocks put it.
		config := fmt.Sprintf(`{"apps": {"http": {"servers": {"srv0": {"listen": [":9080"], "routes": [
			{"handle": [%s]},
			{"handle": [{"handler": "subroute", "routes": [{"handle": [%s]}]}]}
		]}}}}}`, handler("staff", "a.db"), handler("customers", "b.db"))
		path := filepath.Join(dir, "caddy.json")
		os.WriteFile(path, []byte(config), 0o600)
		c := &cli{t: t, config: path}
		expectContains(t, c.fails("lockouts", "clear", "x@example.com"), "several realms (customers, staff)", "--realm")
		expectContains(t, c.fails("lockouts", "clear", "x@example.com", "--realm", "other"), `no realm "other"`)
		c.ok("lockouts", "clear", "x@example.com", "--realm", "customers")
	})
}

func TestCommandClearsLockouts(t *testing.T) {
	eachStore(t, func(t *testing.T, s cliStore) {
		c := &cli{t: t, config: cliSite(t, s.storage, "")}
		ctx := context.Background()
		a := Alias{Kind: KindEmail, Value: "locked@example.com"}
		for range 10 {
			if _, _, err := s.Failure(ctx, a.Key(), lockoutThreshold, lockoutFor, now()); err != nil {
				t.Fatal(err)
			}
		}
		if until, _ := s.LockedUntil(ctx, a.Key()); !until.After(time.Now()) {
			t.Fatalf("not locked: %v", until)
		}
		out := c.ok("lockouts", "clear", "Locked@Example.com")
		expectContains(t, out, "lifted the lockout of locked@example.com")
		if until, err := s.LockedUntil(ctx, a.Key()); err != nil || !until.IsZero() {
			t.Fatalf("still locked until %v (%v)", until, err)
		}
		expectContains(t, c.ok("lockouts", "clear", "locked@example.com"), "was not locked out")
		expectContains(t, c.fails("lockouts", "clear", "not-an-address@"), "Enter a valid email address.")
	})
}

// TestCommandManagesUsers is an operator's day on one store: invite two
// people, look them up, give roles, take a lost phone's sessions away,
// ban and pardon, remove someone.
func TestCommandManagesUsers(t *testing.T) {
	eachStore(t, func(t *testing.T, s cliStore) {
		c := &cli{t: t, config: cliSite(t, s.storage, "")}
		ctx := context.Background()
		alice := Alias{Kind: KindEmail, Value: "alice@example.com"}

		out := c.ok("users", "list")
		if strings.TrimSpace(out) != "ID  EMAIL  MOBILE  ROLES  STATE  CREATED  LAST LOGIN" {
			t.Fatalf("empty list: %q", out)
		}

		// Aliases are normalised as the API normalises them.
		id := strings.TrimSpace(c.ok("users", "add", "Alice@Example.com", "+1 555-123-4567", "--role", "ops", "--role", "admin"))
		u, err := s.UserByAlias(ctx, defaultRealm, alice)
		if err != nil || u.ID != id {
			t.Fatalf("users add printed %q; the store has %+v, %v", id, u, err)
		}
		if u.Mobile != "+15551234567" || !u.EmailVerified || !u.MobileVerified || strings.Join(u.Roles, ",") != "admin,ops" {
			t.Fatalf("created %+v", u)
		}
		expectContains(t, c.fails("users", "add", "+15550001111", "ALICE@example.com"), "alice@example.com already belongs to user "+id)
		if _, err := s.UserByAlias(ctx, defaultRealm, Alias{Kind: KindMobile, Value: "+15550001111"}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("a refused add created a user: %v", err)
		}
		expectContains(t, c.fails("users", "add", "a@example.com", "b@example.com"), "one email")
		expectContains(t, c.fails("users", "add", "bob@"), "Enter a valid email address.")
		expectContains(t, c.fails("users", "add", "+0123"), "E.164")
		expectContains(t, c.fails("users", "add", "bob@example.com", "--role", "bad role"), "not a role name")
		bob := strings.TrimSpace(c.ok("users", "add", "bob@example.com"))

		out = c.ok("users", "list")
		expectContains(t, out, id+"  alice@example.com  +15551234567  admin,ops  active", bob+"  bob@example.com    -             -          active")
		var list []map[string]any
		if err := json.Unmarshal([]byte(c.ok("users", "list", "--json")), &list); err != nil || len(list) != 2 {
			t.Fatalf("users list --json: %v %v", list, err)
		}
		if list[0]["id"] != id || list[0]["state"] != "active" || list[1]["mobile"] != nil || list[1]["last_login"] != nil {
			t.Fatalf("users list --json: %v", list)
		}

		// Alice signs in twice; the operator sees both sessions, never a token.
		for _, ip := range []string{"192.0.2.1", "2001:db8::1"} {
			sid, _ := randomID()
			exp := now().Add(time.Hour)
			sess := Session{ID: sid, UserID: id, CreatedAt: now(), ExpiresAt: exp, ClientIP: ip}
			if err := s.CreateSession(ctx, sess, opaqueHash("refresh-"+ip), exp); err != nil {
				t.Fatal(err)
			}
		}
		var shown map[string]any
		if err := json.Unmarshal([]byte(c.ok("users", "show", "alice@EXAMPLE.com", "--json")), &shown); err != nil {
			t.Fatal(err)
		}
		if shown["id"] != id || shown["sessions"] != 2.0 || shown["email"] != "alice@example.com" {
			t.Fatalf("users show --json: %v", shown)
		}
		expectContains(t, c.ok("users", "show", id), "sessions:      2", "email:         alice@example.com (verified)")
		out = c.ok("sessions", "list", "+15551234567")
		expectContains(t, out, "CLIENT IP", "192.0.2.1", "2001:db8::1")
		var sessions []map[string]any
		if err := json.Unmarshal([]byte(c.ok("sessions", "list", id, "--json")), &sessions); err != nil || len(sessions) != 2 {
			t.Fatalf("sessions list --json: %v %v", sessions, err)
		}
		sid := sessions[0]["id"].(string)

		expectContains(t, c.ok("users", "roles", id, "finance"), "roles of "+id+" (alice@example.com, +15551234567): finance")
		if u, _ := s.UserByID(ctx, id); strings.Join(u.Roles, ",") != "finance" {
			t.Fatalf("roles %v", u.Roles)
		}
		expectContains(t, c.ok("users", "roles", "alice@example.com"), "cleared the roles")
		if u, _ := s.UserByID(ctx, id); len(u.Roles) != 0 {
			t.Fatalf("roles %v", u.Roles)
		}

		// A lost phone: every session of Alice ends.
		expectContains(t, c.ok("sessions", "revoke", "alice@example.com"), "ended 2 sessions of "+id)
		if active, _ := storeSQL(s).SessionActive(ctx, sid, now()); active {
			t.Fatal("a revoked session is active")
		}
		expectContains(t, c.ok("sessions", "list", id), "CLIENT IP")
		if out := c.ok("sessions", "list", id); strings.Count(out, "\n") != 1 {
			t.Fatalf("sessions after revoke: %q", out)
		}

		// Banned: sessions end and sign-in is refused; pardoned: same id.
		sid, _ = randomID()
		exp := now().Add(time.Hour)
		if err := s.CreateSession(ctx, Session{ID: sid, UserID: id, CreatedAt: now(), ExpiresAt: exp}, opaqueHash("again"), exp); err != nil {
			t.Fatal(err)
		}
		expectContains(t, c.ok("users", "disable", "alice@example.com"), "disabled "+id, "1 session ended")
		if active, _ := storeSQL(s).SessionActive(ctx, sid, now()); active {
			t.Fatal("a disabled user's session is active")
		}
		if _, _, err := s.Login(ctx, defaultRealm, alice, true, now()); !errors.Is(err, ErrNotFound) {
			t.Fatalf("a disabled user signed in: %v", err)
		}
		expectContains(t, c.ok("users", "list"), id+"  alice@example.com  +15551234567  -      disabled")
		expectContains(t, c.ok("users", "enable", id), "enabled "+id)
		if u, _, err := s.Login(ctx, defaultRealm, alice, true, now()); err != nil || u.ID != id {
			t.Fatalf("after enable: %+v, %v", u, err)
		}
		expectContains(t, c.ok("users", "enable", id), "was not disabled")

		expectContains(t, c.ok("users", "delete", "bob@example.com"), "deleted "+bob)
		if _, err := s.UserByID(ctx, bob); !errors.Is(err, ErrNotFound) {
			t.Fatalf("bob after delete: %v", err)
		}
		for _, args := range [][]string{
			{"users", "show", "bob@example.com"}, {"users", "disable", bob}, {"users", "delete", bob},
			{"sessions", "revoke", "bob@example.com"}, {"users", "roles", bob, "admin"},
			// One id in 4,096 starts with "--": it is an id, not a flag.
			{"users", "show", "--XDcyc0IfgNj_hpWLT3TA"}, {"users", "disable", "--XDcyc0IfgNj_hpWLT3TA"},
		} {
			expectContains(t, c.fails(args...), "no user with")
		}
	})
}

// operatorBound is how soon a running Caddy must act on what the command
// changed in the store (SPEC: within 5 seconds).
const operatorBound = 5 * time.Second

// TestCommandWhileCaddyServes runs the command on the store of a Caddy
// that is serving, with registration closed: an invited user signs in, a
// revoked session and a disabled user are refused within the bound, and
// an enabled user is the same account again.
func TestCommandWhileCaddyServes(t *testing.T) {
	e := newEnv(t, withConfig("register_new_users false\nrate_limit {\n send_interval 0s\n}\nprotect /admin/* {\n role admin\n}\nprotect /*"))
	c := &cli{t: t, config: cliSite(t, "storage sqlite "+e.db, "register_new_users false")}
	mails := func() int { return len(e.smtp.all()) }

	// Not invited: 200 and nothing sent.
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "guest@example.com"}), http.StatusOK)
	e.drain()
	if n := mails(); n != 0 {
		t.Fatalf("%d mails to an uninvited address", n)
	}
	id := strings.TrimSpace(c.ok("users", "add", "guest@example.com"))
	first := e.login("guest@example.com")
	r := e.get("/app", bearer(first.str("token"))...)
	expectStatus(t, r, http.StatusOK)
	if r.str("id") != id {
		t.Fatalf("the upstream got user %q, the command created %q", r.str("id"), id)
	}
	expectContains(t, c.ok("sessions", "list", id), "127.0.0.1")

	// A role the operator gives opens what it guards.
	expectStatus(t, e.get("/admin/report", bearer(first.str("token"))...), http.StatusForbidden)
	c.ok("users", "roles", id, "admin")
	clock.Advance(operatorBound)
	expectStatus(t, e.get("/admin/report", bearer(first.str("token"))...), http.StatusOK)

	expectContains(t, c.ok("sessions", "revoke", "guest@example.com"), "ended 1 session")
	clock.Advance(operatorBound)
	expectStatus(t, e.get("/app", bearer(first.str("token"))...), http.StatusUnauthorized)
	expectStatus(t, e.postForm("/auth/refresh/", map[string]string{"refresh_token": first.str("refresh_token")}), http.StatusUnauthorized)

	second := e.login("guest@example.com")
	expectStatus(t, e.get("/app", bearer(second.str("token"))...), http.StatusOK)
	expectContains(t, c.ok("users", "disable", id), "1 session ended")
	clock.Advance(operatorBound)
	expectStatus(t, e.get("/app", bearer(second.str("token"))...), http.StatusUnauthorized)
	// A disabled user is answered as an unknown alias: 200, nothing sent,
	// and no code lets it in.
	e.drain()
	before := mails()
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "guest@example.com"}), http.StatusOK)
	e.drain()
	if n := mails(); n != before {
		t.Errorf("a code was sent to a disabled user (%d mails, %d before)", n, before)
	}
	code := e.smtp.code(t, "guest@example.com") // the newest code it ever got
	expectStatus(t, e.postForm("/auth/token/", map[string]string{"email": "guest@example.com", "token": code}), http.StatusBadRequest)

	expectContains(t, c.ok("users", "enable", "guest@example.com"), "enabled "+id)
	third := e.login("guest@example.com")
	me := e.get("/auth/me", bearer(third.str("token"))...)
	expectStatus(t, me, http.StatusOK)
	if me.str("id") != id {
		t.Fatalf("after enable the user is %q, was %q", me.str("id"), id)
	}
}

// TestCommandAudits checks that each change is an audit event in the log
// the config defines, where a running Caddy writes its own.
func TestCommandAudits(t *testing.T) {
	dir := t.TempDir()
	db, logFile := filepath.Join(dir, "pwl.db"), filepath.Join(dir, "caddy.log")
	s, err := openSQLite(db)
	if err != nil {
		t.Fatal(err)
	}
	defer releaseSQLite(s)
	config := filepath.Join(dir, "Caddyfile")
	os.WriteFile(config, []byte(fmt.Sprintf(`{
	log {
		output file %s
		format json
	}
}
http://localhost:9080 {
	passwordless {
		storage sqlite %s
	}
}
`, logFile, db)), 0o600)
	c := &cli{t: t, config: config}

	r := c.run("users", "add", "audited@example.com", "--role", "staff")
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("users add: exit %d, stderr %q", r.code, r.stderr)
	}
	id := strings.TrimSpace(r.stdout)
	c.ok("users", "roles", id, "admin")
	c.ok("sessions", "revoke", id)
	c.ok("users", "disable", id)
	c.ok("users", "enable", id)
	c.ok("users", "list") // no change, no event
	c.ok("lockouts", "clear", "audited@example.com")
	c.ok("users", "delete", id)

	b, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var entry map[string]any
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if entry["logger"] != "http.handlers.passwordless.audit" {
			continue
		}
		if entry["level"] != "info" || entry["user_id"] != id || strings.Contains(line, "audited@example.com") {
			t.Fatalf("audit entry %v", entry)
		}
		msgs = append(msgs, entry["msg"].(string))
	}
	want := []string{"user created", "roles changed", "sessions revoked", "user disabled", "user enabled", "lockout cleared", "user deleted"}
	if strings.Join(msgs, ",") != strings.Join(want, ",") {
		t.Fatalf("audit events %q, want %q", msgs, want)
	}
}

// TestCommandShowsWhoMayGetIn: with allow and allow_file, the roles shown
// are those protected routes see, and a user outside every pattern is
// shown as not allowed.
func TestCommandShowsWhoMayGetIn(t *testing.T) {
	eachStore(t, func(t *testing.T, s cliStore) {
		people := filepath.Join(t.TempDir(), "people.txt")
		os.WriteFile(people, []byte("# staff\nboss@example.com admin\n"), 0o600)
		c := &cli{t: t, config: cliSite(t, s.storage, "allow *@example.com\nallow_file "+people)}
		boss := strings.TrimSpace(c.ok("users", "add", "boss@example.com", "--role", "staff"))
		c.ok("users", "add", "out@other.org")

		expectContains(t, c.ok("users", "list"), boss+"  boss@example.com  -       admin,staff  active")
		var v map[string]any
		if err := json.Unmarshal([]byte(c.ok("users", "show", boss, "--json")), &v); err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(v["roles"]) != "[admin staff]" || fmt.Sprint(v["stored_roles"]) != "[staff]" || v["allowed"] != true {
			t.Fatalf("users show --json: %v", v)
		}
		expectContains(t, c.ok("users", "show", "out@other.org"), "allowed:       no")
	})
}

func TestCommandUsageErrors(t *testing.T) {
	c := &cli{t: t}
	expectContains(t, c.fails("users", "lsit"), `unknown command "lsit"`)
	expectContains(t, c.fails("sessions", "revoke"), "accepts 1 arg(s), received 0")
	expectContains(t, c.fails("users", "add"), "requires at least 1 arg(s)")
	expectContains(t, c.fails("users", "list", "--jsn"), "unknown flag: --jsn")
	expectContains(t, c.ok("users"), "add", "disable", "--realm")
	expectContains(t, c.ok("users", "show", "--help"), "Usage:", "--json")
	expectContains(t, c.fails("users", "show", "x", "--config"), "flag needs an argument: --config")
}

// TestCommandTakesIdsThatLookLikeFlags: one user id in 64 starts with
// '-'; it is an argument, not a flag.
func TestCommandTakesIdsThatLookLikeFlags(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pwl.db")
	s, err := openSQLite(db)
	if err != nil {
		t.Fatal(err)
	}
	defer releaseSQLite(s)
	c := &cli{t: t}
	config := cliSite(t, "storage sqlite "+db, "")
	expectContains(t, c.fails("users", "show", "-qSOggvSjuhw7K3Wg265QQ", "-c", config, "--json"), "no user with id -qSOggvSjuhw7K3Wg265QQ in "+db)
	expectContains(t, c.fails("users", "roles", "--config="+config, "-c7", "admin"), "no user with id -c7")
	expectContains(t, c.fails("sessions", "revoke", "--config", config, "--", "--json"), "no user with id --json")
	c.ok("users", "list", "--json=true", "-c", config)
}

// TestCommandReachesEveryInstance runs the command on a PostgreSQL store
// that two serving instances share: a revocation reaches both.
func TestCommandReachesEveryInstance(t *testing.T) {
	dsn := postgresDSN(t)
	mail := startSMTP(t)
	cl := twoInstances(t, dsn, mail, "", "reverse_proxy "+strings.TrimPrefix(startUpstream(t).URL, "http://"))
	c := &cli{t: t, config: cliSite(t, fmt.Sprintf("storage postgres %q", dsn), "")}
	form := func(base, path string, v url.Values) response { return cl.post(base, path, v, "") }
	get := func(base, tok string) response { return cl.get(base, "/app", tok) }
	a, b := "http://localhost:9080", "http://localhost:9081"

	id := strings.TrimSpace(c.ok("users", "add", "both@example.com"))
	expectStatus(t, form(a, "/auth/email/", url.Values{"email": {"both@example.com"}}), http.StatusOK)
	r := form(a, "/auth/token/", url.Values{"email": {"both@example.com"}, "token": {mail.code(t, "both@example.com")}})
	expectStatus(t, r, http.StatusOK)
	tok := r.str("token")
	for _, base := range []string{a, b} {
		if got := get(base, tok); got.status != http.StatusOK || got.str("id") != id {
			t.Fatalf("%s: %d %s", base, got.status, got.body)
		}
	}
	expectContains(t, c.ok("sessions", "revoke", id), "ended 1 session")
	clock.Advance(operatorBound)
	for _, base := range []string{a, b} {
		expectStatus(t, get(base, tok), http.StatusUnauthorized)
	}
}

func TestCommandAddRefusesNumbersTheAPIRefuses(t *testing.T) {
	eachStore(t, func(t *testing.T, s cliStore) {
		c := &cli{t: t, config: cliSite(t, s.storage, "sms {\n log\n allowed_country_codes +1\n}")}
		expectContains(t, c.fails("users", "add", "+44 20 7946 0000"), "+442079460000: numbers in this country are not accepted (allowed calling codes: +1)")
		if users, err := s.Users(context.Background(), defaultRealm); err != nil || len(users) != 0 {
			t.Fatalf("users after a refused add: %v, %v", users, err)
		}
		c.ok("users", "add", "+1 555 000 1234")
	})
}

// The command never writes to a file that is not a store, and neither
// does `caddy run`: an empty or a text file is refused and keeps its
// contents and mode; a SQLite database without the store's schema too.
func TestCommandRefusesFilesThatAreNotAStore(t *testing.T) {
	dir := t.TempDir()
	empty, text, other := filepath.Join(dir, "empty.db"), filepath.Join(dir, "notes.txt"), filepath.Join(dir, "other.db")
	for path, content := range map[string]string{empty: "", text: "my notes\n"} {
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	db, err := sql.Open("sqlite", other)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TABLE notes (body TEXT)`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	unchanged := func(path, content string) {
		t.Helper()
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(path)
		if fi.Mode().Perm() != 0o644 || string(got) != content {
			t.Errorf("%s changed: mode %v, %d bytes", path, fi.Mode().Perm(), len(got))
		}
	}
	for path, content := range map[string]string{empty: "", text: "my notes\n"} {
		c := &cli{t: t, config: cliSite(t, "storage sqlite "+path, "")}
		expectContains(t, c.fails("users", "add", "a@example.com"), path+" is not a SQLite database")
		unchanged(path, content)
		err := loadCaddyfile(t, fmt.Sprintf("http://localhost:9080 {\n passwordless {\n storage sqlite %s\n email {\n log\n }\n }\n respond ok\n}\n", path))
		if err == nil || !strings.Contains(err.Error(), "is not a SQLite database") {
			t.Errorf("caddy run on %s: %v", path, err)
		}
		unchanged(path, content)
	}
	c := &cli{t: t, config: cliSite(t, "storage sqlite "+other, "")}
	expectContains(t, c.fails("users", "add", "a@example.com"), other+" is a SQLite database but not a passwordless store")
}

// The command is a client of the store, as a server is not: a store at
// another schema version is refused with both versions named and left as
// it is; nothing is purged and no checkpoint empties the log it shares
// with the running server.
func TestCommandIsAClientOfTheStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pwl.db")
	s, err := openSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	u, err := s.CreateUser(ctx, defaultRealm, []Alias{{Kind: KindEmail, Value: "old@example.com"}}, nil, now())
	if err != nil {
		t.Fatal(err)
	}
	releaseSQLite(s)
	// An ended session, written while no server runs: a server would
	// purge it when it opens the store.
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Exec(`INSERT INTO sessions (id, user_id, created_at, expires_at) VALUES ('ended', ?, 1000, 2000)`, u.ID); err != nil {
		t.Fatal(err)
	}
	c := &cli{t: t, config: cliSite(t, "storage sqlite "+path, "")}
	c.ok("users", "list")
	var n int
	if err := raw.QueryRow(`SELECT COUNT(*) FROM sessions WHERE id = 'ended'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("the command purged the store: %d %v", n, err)
	}

	// With a server on the file, the command leaves the server's log alone.
	if s, err = openSQLite(path); err != nil {
		t.Fatal(err)
	}
	defer releaseSQLite(s)
	if _, err := s.CreateUser(ctx, defaultRealm, []Alias{{Kind: KindEmail, Value: "new@example.com"}}, nil, now()); err != nil {
		t.Fatal(err)
	}
	c.ok("users", "list")
	if fi, err := os.Stat(path + "-wal"); err != nil || fi.Size() == 0 {
		t.Fatalf("the command truncated the server's log: %v", err)
	}

	if _, err := s.db.ExecContext(ctx, `PRAGMA user_version = 2`); err != nil {
		t.Fatal(err)
	}
	line := c.fails("users", "list")
	expectContains(t, line, "schema version 2", fmt.Sprintf("version %d", len(sqliteMigrations)))
	var version int
	if err := s.db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&version); err != nil || version != 2 {
		t.Fatalf("the command migrated the store: %d %v", version, err)
	}
	if _, err := s.db.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, len(sqliteMigrations))); err != nil {
		t.Fatal(err)
	}
}

// Flags and aliases are told apart as the README says: a word is a flag
// when its name is one of the command's, whatever its value (--realm=x@y);
// an unknown --word holding '@' is an alias. A role with a newline is
// refused, not cut at the newline.
func TestCommandFlagsAndAliases(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pwl.db")
	s, err := openSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer releaseSQLite(s)
	c := &cli{t: t, config: cliSite(t, "storage sqlite "+path, "realm main")}
	expectContains(t, c.fails("users", "list", "--realm=x@y"), `no realm "x@y"`)
	c.ok("users", "add", "--x=y@example.com", "--realm=main")
	expectContains(t, c.ok("users", "show", "--x=y@example.com"), "--x=y@example.com")
	expectContains(t, c.fails("users", "add", "r@example.com", "--role", "admin\nroot"), "is not a role name")
	expectContains(t, c.fails("users", "show", "r@example.com"), "no user")
	c.ok("users", "add", "r@example.com", "--role", "a,b", "--role", "c")
	expectContains(t, c.ok("users", "show", "r@example.com"), "a,b,c")
}
