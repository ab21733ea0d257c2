package passwordless

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// storeFactories lists every Store implementation; each runs the same
// contract test.
var storeFactories = map[string]func(t *testing.T) Store{
	"sqlite": func(t *testing.T) Store {
		s := tempSQLite(t, "contract.db")
		afterFirstPurge(s)
		return s
	},
	"postgres": func(t *testing.T) Store {
		s, err := openPostgres(postgresDSN(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { releasePostgres(s) })
		afterFirstPurge(s)
		return s
	},
}

// afterFirstPurge waits until a new store's first purge has run: a purge
// that the scheduler delays would otherwise delete what a test just
// revoked, between two of its steps (seen once in CI, under load).
func afterFirstPurge(s Store) {
	if ss := storeSQL(s); ss.purged != nil {
		<-ss.purged
	}
}

// postgresDSN is a connection string to the PostgreSQL that .ci/postgres.sh
// starts, with a schema of the test's own. Locally the test skips when
// none runs; in CI it must not.
func postgresDSN(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv("PWL_TEST_POSTGRES")
	if dsn == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("PWL_TEST_POSTGRES is not set: .ci/run must start PostgreSQL")
		}
		t.Skip("no PostgreSQL: start one with eval \"$(.ci/postgres.sh)\" to run this test")
	}
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	id, _ := randomID()
	return dsn + sep + "search_path=pwl_test_" + strings.ToLower(strings.NewReplacer("-", "_").Replace(id))
}

func TestStoreContract(t *testing.T) {
	for name, open := range storeFactories {
		t.Run(name, func(t *testing.T) {
			t.Run("secret generated once", func(t *testing.T) { testSecret(t, open(t)) })
			t.Run("codes", func(t *testing.T) { testCodes(t, open(t)) })
			t.Run("concurrent redeem", func(t *testing.T) { testConcurrentRedeem(t, open(t)) })
			t.Run("attempts claimed before compare", func(t *testing.T) { testAttemptsClaimedBeforeCompare(t, open(t)) })
			t.Run("sign in", func(t *testing.T) { testSignIn(t, open(t)) })
			t.Run("concurrent sign in", func(t *testing.T) { testConcurrentSignIn(t, open(t)) })
			t.Run("users", func(t *testing.T) { testUsers(t, open(t)) })
			t.Run("sessions", func(t *testing.T) { testSessions(t, open(t)) })
			t.Run("hit", func(t *testing.T) { testHit(t, open(t)) })
			t.Run("outbox", func(t *testing.T) { testOutbox(t, open(t)) })
			t.Run("concurrent claims", func(t *testing.T) { testConcurrentClaims(t, open(t)) })
			t.Run("failures", func(t *testing.T) { testFailures(t, open(t)) })
			t.Run("purge", func(t *testing.T) { testPurge(t, open(t)) })
			t.Run("realms", func(t *testing.T) { testRealms(t, open(t)) })
			t.Run("session user", func(t *testing.T) { testSessionUser(t, open(t)) })
			t.Run("admin", func(t *testing.T) { testAdmin(t, open(t)) })
			t.Run("ping", func(t *testing.T) { testPing(t, open(t)) })
			t.Run("passkeys", func(t *testing.T) { testPasskeys(t, open(t)) })
			t.Run("passkey sign in", func(t *testing.T) { testPasskeySignIn(t, open(t)) })
			t.Run("passkey ceremonies", func(t *testing.T) { testCeremonies(t, open(t)) })
		})
	}
}

func testSecret(t *testing.T, s Store) {
	ctx := context.Background()
	var calls atomic.Int32
	gen := func() ([]byte, error) {
		calls.Add(1)
		return randomBytes(32)
	}
	var wg sync.WaitGroup
	got := make([][]byte, 8)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := s.Secret(ctx, "k", gen)
			if err != nil {
				t.Error(err)
			}
			got[i] = v
		}()
	}
	wg.Wait()
	for _, v := range got[1:] {
		if !bytes.Equal(v, got[0]) || len(v) != 32 {
			t.Fatal("concurrent callers got different secrets")
		}
	}
}

func testCodes(t *testing.T, s Store) {
	ctx := context.Background()
	t0 := now().Truncate(time.Millisecond) // stores keep milliseconds
	eq := func(want []byte) func([]byte) bool { return func(h []byte) bool { return bytes.Equal(h, want) } }
	save := func(id string, hash []byte) {
		if err := storeSQL(s).SaveCode(ctx, Code{ID: id, Alias: "email:a@example.com", Purpose: purposeLogin, Hash: hash, ExpiresAt: t0.Add(time.Minute), CreatedAt: t0}); err != nil {
			t.Fatal(err)
		}
	}
	redeem := func(hash []byte, at time.Time) CodeResult {
		_, res, err := s.RedeemCode(ctx, "email:a@example.com", purposeLogin, eq(hash), 3, at)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if r := redeem([]byte("x"), t0); r != CodeMissing {
		t.Fatalf("no code: %v", r)
	}
	save("1", []byte("one"))
	save("2", []byte("two")) // kills "one"
	if r := redeem([]byte("one"), t0); r != CodeWrong {
		t.Fatalf("replaced code: %v", r)
	}
	if _, res, _ := s.RedeemCode(ctx, "email:a@example.com", purposeVerify, eq([]byte("two")), 3, t0); res != CodeMissing {
		t.Fatalf("other purpose: %v", res)
	}
	if r := redeem([]byte("two"), t0); r != CodeOK {
		t.Fatalf("right code: %v", r)
	}
	if r := redeem([]byte("two"), t0); r != CodeMissing {
		t.Fatalf("reused code: %v", r)
	}
	save("3", []byte("three"))
	// An expired code is no longer live: a guess at it claims nothing,
	// so it cannot count toward a lockout.
	if r := redeem([]byte("bad"), t0.Add(time.Minute)); r != CodeMissing {
		t.Fatalf("guess at an expired code: %v", r)
	}
	if r := redeem([]byte("three"), t0.Add(time.Minute)); r != CodeMissing {
		t.Fatalf("expired code: %v", r)
	}
	save("4", []byte("four"))
	for range 3 {
		if r := redeem([]byte("bad"), t0); r != CodeWrong {
			t.Fatalf("wrong guess: %v", r)
		}
	}
	if r := redeem([]byte("four"), t0); r != CodeMissing {
		t.Fatalf("code survived max attempts: %v", r)
	}
	save("5", []byte("five"))
	if err := s.DeleteCode(ctx, "5"); err != nil {
		t.Fatal(err)
	}
	if r := redeem([]byte("five"), t0); r != CodeMissing {
		t.Fatalf("deleted code: %v", r)
	}
}

// testSignIn: a successful exchange redeems the code, signs the alias in,
// clears its failures and starts the session, all at once; anything short
// of it stores only what a wrong guess stores.
func testSignIn(t *testing.T, s Store) {
	ctx := context.Background()
	t0 := now().Truncate(time.Millisecond) // stores keep milliseconds
	a := Alias{Kind: KindEmail, Value: "in@example.com"}
	key := realmKey(defaultRealm, a.Key())
	save := func(hash string) {
		if err := storeSQL(s).SaveCode(ctx, Code{ID: "c-" + hash, Alias: key, Purpose: purposeLogin, Hash: []byte(hash), ExpiresAt: t0.Add(time.Minute), CreatedAt: t0}); err != nil {
			t.Fatal(err)
		}
	}
	signIn := func(code, sid string, create bool) (SignInResult, error) {
		return s.SignIn(ctx, SignIn{Realm: defaultRealm, Alias: a, Key: key, MaxAttempts: 2, Create: create,
			Match:   func(h []byte) bool { return string(h) == code },
			Session: Session{ID: sid, CreatedAt: t0, ExpiresAt: t0.Add(time.Hour), ClientIP: "192.0.2.1"}, RefreshHash: []byte("r-" + sid)}, t0)
	}
	if res, err := signIn("x", "s0", true); err != nil || res.Code != CodeMissing {
		t.Fatalf("no code: %v %v", res.Code, err)
	}
	save("one")
	s.Failure(ctx, key, 10, time.Minute, t0)
	if res, err := signIn("bad", "s1", true); err != nil || res.Code != CodeWrong || res.User.ID != "" {
		t.Fatalf("wrong code: %+v %v", res, err)
	}
	if _, err := s.SessionUser(ctx, "s1", t0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a wrong code started a session: %v", err)
	}
	// Registration closed: the right code is spent, nobody signs in.
	if _, err := signIn("one", "s2", false); !errors.Is(err, ErrNotFound) {
		t.Fatalf("closed registration: %v", err)
	}
	if res, _ := signIn("one", "s3", true); res.Code != CodeMissing {
		t.Fatalf("the spent code redeemed again: %v", res.Code)
	}
	save("two")
	res, err := signIn("two", "s4", true)
	if err != nil || res.Code != CodeOK || !res.Created || res.User.Email != a.Value || !res.User.EmailVerified {
		t.Fatalf("sign in: %+v %v", res, err)
	}
	su, err := s.SessionUser(ctx, "s4", t0)
	if err != nil || !su.Active || su.User.ID != res.User.ID {
		t.Fatalf("session: %+v %v", su, err)
	}
	if sess, err := s.RotateRefresh(ctx, []byte("r-s4"), []byte("r-s4b"), t0.Add(time.Hour), t0); err != nil || sess.ID != "s4" {
		t.Fatalf("the first refresh token: %+v %v", sess, err)
	}
	if n, _, _ := s.Failure(ctx, key, 10, time.Minute, t0); n != 1 {
		t.Fatalf("failures not cleared: the next one is number %d", n)
	}
	// The same user next time; a disabled one is not signed in.
	save("three")
	if again, err := signIn("three", "s5", false); err != nil || again.Created || again.User.ID != res.User.ID {
		t.Fatalf("second sign in: %+v %v", again, err)
	}
	if err := s.SetDisabled(ctx, res.User.ID, true); err != nil {
		t.Fatal(err)
	}
	save("four")
	if _, err := signIn("four", "s6", true); !errors.Is(err, ErrNotFound) {
		t.Fatalf("disabled user: %v", err)
	}
	// Without a code to redeem (a demo user's fixed code was checked).
	if err := s.SetDisabled(ctx, res.User.ID, false); err != nil {
		t.Fatal(err)
	}
	demo, err := s.SignIn(ctx, SignIn{Realm: defaultRealm, Alias: a, Key: key, Create: true,
		Session: Session{ID: "s7", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}, RefreshHash: []byte("r-s7")}, t0)
	if err != nil || demo.Code != CodeOK || demo.User.ID != res.User.ID {
		t.Fatalf("sign in without a code: %+v %v", demo, err)
	}
}

// testConcurrentSignIn: of concurrent exchanges of one code, on any
// instance, exactly one signs in.
func testConcurrentSignIn(t *testing.T, s Store) {
	ctx := context.Background()
	t0 := now().Truncate(time.Millisecond)
	a := Alias{Kind: KindEmail, Value: "race@example.com"}
	for round := range 3 {
		if err := storeSQL(s).SaveCode(ctx, Code{ID: fmt.Sprint("race", round), Alias: a.Key(), Purpose: purposeLogin, Hash: []byte("h"), ExpiresAt: t0.Add(time.Minute), CreatedAt: t0}); err != nil {
			t.Fatal(err)
		}
		oks := concurrently(10, func(i int) int {
			sid := fmt.Sprintf("race-%d-%d", round, i)
			res, err := s.SignIn(ctx, SignIn{Realm: defaultRealm, Alias: a, Key: a.Key(), MaxAttempts: 5, Create: true,
				Match:   func(h []byte) bool { return string(h) == "h" },
				Session: Session{ID: sid, CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}, RefreshHash: []byte(sid)}, t0)
			if err != nil {
				t.Error(err)
			}
			if res.Code == CodeOK {
				return 1
			}
			return 0
		})
		if n := slices.Index(oks, 1); n < 0 || slices.Index(oks[n+1:], 1) >= 0 {
			t.Fatalf("round %d: sign-ins %v, want exactly one", round, oks)
		}
	}
}

func testConcurrentRedeem(t *testing.T, s Store) {
	ctx := context.Background()
	t0 := now().Truncate(time.Millisecond) // stores keep milliseconds
	for round := range 5 {
		if err := storeSQL(s).SaveCode(ctx, Code{ID: "c" + string(rune('a'+round)), Alias: "email:r@example.com", Purpose: purposeLogin, Hash: []byte("h"), ExpiresAt: t0.Add(time.Minute), CreatedAt: t0}); err != nil {
			t.Fatal(err)
		}
		var ok atomic.Int32
		var wg sync.WaitGroup
		for range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, res, err := s.RedeemCode(ctx, "email:r@example.com", purposeLogin, func(h []byte) bool { return bytes.Equal(h, []byte("h")) }, 5, t0)
				if err != nil {
					t.Error(err)
				}
				if res == CodeOK {
					ok.Add(1)
				}
			}()
		}
		wg.Wait()
		if ok.Load() != 1 {
			t.Fatalf("round %d: %d winners", round, ok.Load())
		}
	}
}

func testUsers(t *testing.T, s Store) {
	ctx := context.Background()
	t0 := now().Truncate(time.Millisecond) // stores keep milliseconds
	a := Alias{Kind: KindEmail, Value: "u@example.com"}
	if _, _, err := s.Login(ctx, defaultRealm, a, false, t0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("login without create: %v", err)
	}
	u, created, err := s.Login(ctx, defaultRealm, a, true, t0)
	if err != nil || u.ID == "" || u.Email != a.Value || !u.EmailVerified || !created {
		t.Fatalf("created %+v (%t), %v", u, created, err)
	}
	again, created, err := s.Login(ctx, defaultRealm, a, false, t0)
	if err != nil || again.ID != u.ID || created {
		t.Fatalf("second login %+v (created %t), %v", again, created, err)
	}
	// Within the same millisecond, and allowed to create, only the call
	// that made the user says so.
	if again, created, err := s.Login(ctx, defaultRealm, a, true, t0); err != nil || again.ID != u.ID || created {
		t.Fatalf("third login %+v (created %t), %v", again, created, err)
	}
	m := Alias{Kind: KindMobile, Value: "+15551234567"}
	linked, err := s.LinkAlias(ctx, u.ID, m)
	if err != nil || linked.Mobile != m.Value || !linked.MobileVerified {
		t.Fatalf("link %+v, %v", linked, err)
	}
	other, _, _ := s.Login(ctx, defaultRealm, Alias{Kind: KindEmail, Value: "o@example.com"}, true, t0)
	if _, err := s.LinkAlias(ctx, other.ID, m); !errors.Is(err, ErrAliasTaken) {
		t.Fatalf("link of a taken alias: %v", err)
	}
	if byM, _ := s.UserByAlias(ctx, defaultRealm, m); byM.ID != u.ID {
		t.Fatal("taken alias moved")
	}
	if _, err := s.UserByID(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown id: %v", err)
	}
}

func testSessions(t *testing.T, s Store) {
	ctx := context.Background()
	t0 := now().Truncate(time.Millisecond) // stores keep milliseconds
	u, _, _ := s.Login(ctx, defaultRealm, Alias{Kind: KindEmail, Value: "s@example.com"}, true, t0)
	sess := Session{ID: "s1", UserID: u.ID, CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}
	if err := s.CreateSession(ctx, sess, []byte("r1"), t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if ok, _ := storeSQL(s).SessionActive(ctx, "s1", t0); !ok {
		t.Fatal("new session inactive")
	}
	if _, err := s.RotateRefresh(ctx, []byte("r1"), opaqueHash("r2"), t0.Add(time.Hour), t0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RotateRefresh(ctx, []byte("r1"), []byte("r3"), t0.Add(time.Hour), t0); !errors.Is(err, ErrRefreshReused) {
		t.Fatalf("reuse: %v", err)
	}
	if ok, _ := storeSQL(s).SessionActive(ctx, "s1", t0); ok {
		t.Fatal("reuse did not revoke the session")
	}
	if _, err := s.RotateRefresh(ctx, opaqueHash("r2"), []byte("r4"), t0.Add(time.Hour), t0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("rotation in a revoked session: %v", err)
	}
	s.CreateSession(ctx, Session{ID: "s2", UserID: u.ID, CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}, []byte("q1"), t0.Add(time.Hour))
	if _, err := s.RotateRefresh(ctx, []byte("q1"), []byte("q2"), t0.Add(3*time.Hour), t0.Add(2*time.Hour)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("expired refresh token: %v", err)
	}
	// A rotation extends the session to the new refresh token's expiry.
	s.CreateSession(ctx, Session{ID: "s3", UserID: u.ID, CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}, opaqueHash("p1"), t0.Add(time.Hour))
	if sess, err := s.RotateRefresh(ctx, opaqueHash("p1"), opaqueHash("p2"), t0.Add(3*time.Hour), t0.Add(30*time.Minute)); err != nil || !sess.ExpiresAt.Equal(t0.Add(3*time.Hour)) {
		t.Fatalf("rotation: %+v %v", sess, err)
	}
	if ok, _ := storeSQL(s).SessionActive(ctx, "s3", t0.Add(2*time.Hour)); !ok {
		t.Fatal("a rotated session ended at its first expiry")
	}
	if err := s.RevokeSession(ctx, "s2"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := storeSQL(s).SessionActive(ctx, "s2", t0); ok {
		t.Fatal("revoked session active")
	}
}

func testHit(t *testing.T, s Store) {
	ctx := context.Background()
	t0 := now().Truncate(time.Millisecond) // stores keep milliseconds
	k := RateLimit{Key: "k", Count: 3, Window: time.Hour}
	for i := range 3 {
		if wait, err := s.Hit(ctx, k, t0.Add(time.Duration(i)*time.Minute)); err != nil || wait != 0 {
			t.Fatalf("hit %d: %v %v", i, wait, err)
		}
	}
	// A burst of 3 uses the allowance; it refills one per 20 minutes.
	wait, err := s.Hit(ctx, k, t0.Add(10*time.Minute))
	if err != nil || wait != 10*time.Minute {
		t.Fatalf("over the limit: wait %v, %v; want 10m", wait, err)
	}
	if wait, _ := s.Hit(ctx, k, t0.Add(20*time.Minute)); wait != 0 {
		t.Fatalf("after a refill: %v", wait)
	}
	if wait, _ := s.Hit(ctx, k, t0.Add(21*time.Minute)); wait != 19*time.Minute {
		t.Fatalf("right after the refill was used: %v, want 19m", wait)
	}
	// A long quiet time refills the whole burst, and no more.
	for i := range 4 {
		wait, _ := s.Hit(ctx, k, t0.Add(5*time.Hour))
		if (wait == 0) != (i < 3) {
			t.Fatalf("burst after a quiet time, hit %d: wait %v", i, wait)
		}
	}
	// Exact under concurrency: 50 callers, limit 7, exactly 7 pass.
	var passed atomic.Int32
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w, err := s.Hit(ctx, RateLimit{Key: "c", Count: 7, Window: time.Hour}, t0)
			if err != nil {
				t.Error(err)
			}
			if w == 0 {
				passed.Add(1)
			}
		}()
	}
	wg.Wait()
	if passed.Load() != 7 {
		t.Fatalf("%d passed a limit of 7", passed.Load())
	}
}

func testFailures(t *testing.T, s Store) {
	ctx := context.Background()
	t0 := now().Truncate(time.Millisecond) // stores keep milliseconds
	for i := 1; i <= 3; i++ {
		n, until, err := s.Failure(ctx, "a", 3, time.Minute, t0)
		if err != nil || n != i {
			t.Fatalf("failure %d: %d %v", i, n, err)
		}
		if (i == 3) != !until.IsZero() {
			t.Fatalf("failure %d: locked until %v", i, until)
		}
	}
	if until, _ := s.LockedUntil(ctx, "a"); !until.Equal(t0.Add(time.Minute).Truncate(time.Millisecond)) {
		t.Fatalf("locked until %v", until)
	}
	// PeekLocked reads the lock and a limit together: the limit as Peek,
	// and nothing for a limit or an alias the store has never seen.
	k := RateLimit{Key: "peek", Count: 1, Window: time.Hour}
	if wait, until, err := s.PeekLocked(ctx, k, "a", t0); err != nil || wait != 0 || !until.Equal(t0.Add(time.Minute)) {
		t.Fatalf("peek and lock: %v %v %v", wait, until, err)
	}
	if wait, until, err := s.PeekLocked(ctx, k, "nobody", t0); err != nil || wait != 0 || !until.IsZero() {
		t.Fatalf("peek and lock of nothing: %v %v %v", wait, until, err)
	}
	s.Hit(ctx, k, t0)
	if wait, until, err := s.PeekLocked(ctx, k, "nobody", t0.Add(15*time.Minute)); err != nil || wait != 45*time.Minute || !until.IsZero() {
		t.Fatalf("peek of a spent limit: %v %v %v", wait, until, err)
	}
	// Once the lock has ended, a new lock needs a whole new run: one more
	// failure is the first of it, not a relock.
	after := t0.Add(time.Minute)
	for i := 1; i <= 3; i++ {
		n, until, err := s.Failure(ctx, "a", 3, time.Minute, after)
		if err != nil || n != i || (i == 3) == until.IsZero() {
			t.Fatalf("after the lock, failure %d: count %d, until %v, %v", i, n, until, err)
		}
	}
	if err := s.ResetFailures(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if until, _ := s.LockedUntil(ctx, "a"); !until.IsZero() {
		t.Fatalf("still locked after reset: %v", until)
	}
}

func TestSQLiteHandleShared(t *testing.T) {
	path := filepath.Join(t.TempDir(), "shared.db")
	a, err := openSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := openSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Fatal("two handles for one file")
	}
	releaseSQLite(a)
	if err := b.db.Ping(); err != nil {
		t.Fatalf("closed while still in use: %v", err)
	}
	releaseSQLite(b)
	if err := b.db.Ping(); err == nil {
		t.Fatal("still open after the last release")
	}
}

func testPurge(t *testing.T, s Store) {
	ctx := context.Background()
	t0 := now().Truncate(time.Millisecond)
	match := func(h []byte) bool { return bytes.Equal(h, []byte("h")) }
	storeSQL(s).SaveCode(ctx, Code{ID: "old", Alias: "email:old@example.com", Purpose: purposeLogin, Hash: []byte("h"), ExpiresAt: t0.Add(time.Minute), CreatedAt: t0})
	storeSQL(s).SaveCode(ctx, Code{ID: "new", Alias: "email:new@example.com", Purpose: purposeLogin, Hash: []byte("h"), ExpiresAt: t0.Add(time.Hour), CreatedAt: t0})
	u, _, _ := s.Login(ctx, defaultRealm, Alias{Kind: KindEmail, Value: "p@example.com"}, true, t0)
	s.CreateSession(ctx, Session{ID: "live", UserID: u.ID, CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}, []byte("r-live"), t0.Add(time.Hour))
	s.CreateSession(ctx, Session{ID: "gone", UserID: u.ID, CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}, []byte("r-gone"), t0.Add(time.Hour))
	s.RevokeSession(ctx, "gone")
	s.Hit(ctx, RateLimit{Key: "k", Count: 1, Window: maxRateWindow}, t0)

	if err := s.Purge(ctx, t0.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, res, _ := s.RedeemCode(ctx, "email:old@example.com", purposeLogin, match, 5, t0); res != CodeMissing {
		t.Fatalf("expired code kept: %v", res)
	}
	if _, res, _ := s.RedeemCode(ctx, "email:new@example.com", purposeLogin, match, 5, t0); res != CodeOK {
		t.Fatalf("live code purged: %v", res)
	}
	if ok, _ := storeSQL(s).SessionActive(ctx, "live", t0); !ok {
		t.Fatal("live session purged")
	}
	if _, err := s.RotateRefresh(ctx, []byte("r-live"), []byte("r2"), t0.Add(time.Hour), t0); err != nil {
		t.Fatalf("live refresh token purged: %v", err)
	}
	if wait, _ := s.Hit(ctx, RateLimit{Key: "k", Count: 1, Window: maxRateWindow}, t0.Add(time.Hour)); wait == 0 {
		t.Fatal("a rate limit inside its window was purged")
	}
	s.Purge(ctx, t0.Add(maxRateWindow+time.Hour))
	if wait, _ := s.Hit(ctx, RateLimit{Key: "k", Count: 1, Window: maxRateWindow}, t0.Add(maxRateWindow+time.Hour)); wait != 0 {
		t.Fatal("an old rate limit blocks")
	}
}

func queued(id, alias string, t0 time.Time) (Code, OutboxMessage) {
	c := Code{ID: id, Alias: "email:" + alias, Purpose: purposeLogin, Hash: []byte("h-" + id), ExpiresAt: t0.Add(time.Hour), CreatedAt: t0}
	m := OutboxMessage{ID: id, Queue: "q", Channel: KindEmail, To: alias, Purpose: purposeLogin, Code: "123456", Deliver: true, ExpiresAt: t0.Add(time.Hour), CreatedAt: t0}
	return c, m
}

func testOutbox(t *testing.T, s Store) {
	ctx := context.Background()
	t0 := now().Truncate(time.Millisecond)
	limits := []RateLimit{{Key: "interval", Count: 1, Window: time.Minute}, {Key: "ip", Count: 10, Window: time.Hour}}
	c, m := queued("m1", "o@example.com", t0)
	m.Lang = "pt-BR" // the message is written in the language it was asked in
	if wait, _, err := s.QueueCode(ctx, limits, c, m, t0); err != nil || wait != 0 {
		t.Fatalf("queue: %v %v", wait, err)
	}
	// Refused by the interval: nothing is stored, and no limit counts it.
	c2, m2 := queued("m2", "o@example.com", t0)
	if wait, by, err := s.QueueCode(ctx, limits, c2, m2, t0); err != nil || wait != time.Minute || by != "interval" {
		t.Fatalf("over the interval: %v %q %v", wait, by, err)
	}
	for i := 1; i < 10; i++ {
		if w, _ := s.Hit(ctx, limits[1], t0); w != 0 {
			t.Fatalf("ip hit %d refused: the refused request was counted", i+1)
		}
	}
	if w, _ := s.Hit(ctx, limits[1], t0); w == 0 {
		t.Fatal("the ip limit let an 11th request through")
	}
	if live, _ := s.LiveCodes(ctx, []string{"m1", "m2"}, t0); !live["m1"] || live["m2"] {
		t.Fatalf("live codes %v, want m1 only", live)
	}

	if got, _ := s.ClaimOutbox(ctx, "other", 10, t0, time.Minute); len(got) != 0 {
		t.Fatalf("another queue's claim got %d messages", len(got))
	}
	got, err := s.ClaimOutbox(ctx, "q", 10, t0, time.Minute)
	if err != nil || len(got) != 1 {
		t.Fatalf("claim: %v %v", got, err)
	}
	g := got[0]
	if g.ID != "m1" || g.Queue != "q" || g.Channel != KindEmail || g.To != "o@example.com" || g.Purpose != purposeLogin ||
		g.Code != "123456" || !g.Deliver || g.Lang != "pt-BR" || g.Attempts != 1 || !g.ExpiresAt.Equal(m.ExpiresAt) || !g.CreatedAt.Equal(t0) {
		t.Fatalf("claimed %+v", g)
	}
	if got, _ := s.ClaimOutbox(ctx, "q", 10, t0.Add(59*time.Second), time.Minute); len(got) != 0 {
		t.Fatal("a leased message was claimed twice")
	}
	// The worker died: the lease runs out and the message is due again.
	got, _ = s.ClaimOutbox(ctx, "q", 10, t0.Add(time.Minute), time.Minute)
	if len(got) != 1 || got[0].Attempts != 2 {
		t.Fatalf("after the lease: %+v", got)
	}
	if err := s.RetryOutbox(ctx, "m1", t0.Add(5*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.ClaimOutbox(ctx, "q", 10, t0.Add(4*time.Minute), time.Minute); len(got) != 0 {
		t.Fatal("claimed before its retry was due")
	}
	if got, _ := s.ClaimOutbox(ctx, "q", 10, t0.Add(5*time.Minute), time.Minute); len(got) != 1 {
		t.Fatal("not claimed when its retry was due")
	}

	if n, err := s.PendingMessages(ctx, t0); err != nil || n[KindEmail] != 1 || n[KindMobile] != 0 {
		t.Fatalf("pending: %v %v, want 1 email", n, err)
	}
	if n, _ := s.PendingMessages(ctx, t0.Add(time.Hour)); n[KindEmail] != 0 {
		t.Fatalf("pending once its code expired: %v", n)
	}

	// A new code for the alias supersedes the queued one's code.
	c3, m3 := queued("m3", "o@example.com", t0)
	m3.Deliver, m3.Code = false, ""
	if wait, _, err := s.QueueCode(ctx, nil, c3, m3, t0.Add(2*time.Minute)); err != nil || wait != 0 {
		t.Fatalf("queue: %v %v", wait, err)
	}
	if live, _ := s.LiveCodes(ctx, []string{"m1", "m3"}, t0); live["m1"] || !live["m3"] {
		t.Fatalf("live codes %v, want m3 only", live)
	}
	if live, _ := s.LiveCodes(ctx, []string{"m3"}, t0.Add(time.Hour)); live["m3"] {
		t.Fatal("an expired code is live")
	}
	got, _ = s.ClaimOutbox(ctx, "q", 10, t0.Add(2*time.Minute), time.Minute)
	if len(got) != 1 || got[0].ID != "m3" || got[0].Deliver || got[0].Code != "" {
		t.Fatalf("claimed %+v", got)
	}

	// Neither the superseded message nor one not to be sent is pending.
	if n, err := s.PendingMessages(ctx, t0); err != nil || n[KindEmail] != 0 || n[KindMobile] != 0 {
		t.Fatalf("pending: %v %v, want none", n, err)
	}
	if err := s.FinishOutbox(ctx, []string{"m1", "m3"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.ClaimOutbox(ctx, "q", 10, t0.Add(time.Hour-time.Millisecond), time.Minute); len(got) != 0 {
		t.Fatalf("finished messages came back: %+v", got)
	}
	if n, _ := s.PendingMessages(ctx, t0); n[KindEmail] != 0 {
		t.Fatalf("pending after finishing: %v", n)
	}
	// Purge removes what expired unsent.
	c4, m4 := queued("m4", "p@example.com", t0)
	s.QueueCode(ctx, nil, c4, m4, t0)
	if err := s.Purge(ctx, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.ClaimOutbox(ctx, "q", 10, t0.Add(time.Hour), time.Minute); len(got) != 0 {
		t.Fatal("an expired message survived the purge")
	}
}

// Workers claiming at once, as several instances do, each get their own
// messages: every message is claimed exactly once.
func testConcurrentClaims(t *testing.T, s Store) {
	ctx := context.Background()
	t0 := now().Truncate(time.Millisecond)
	const n = 60
	for i := range n {
		c, m := queued(fmt.Sprintf("c%02d", i), fmt.Sprintf("c%02d@example.com", i), t0)
		if _, _, err := s.QueueCode(ctx, nil, c, m, t0); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	claimed := map[string]int{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				got, err := s.ClaimOutbox(ctx, "q", 3, t0, time.Minute)
				if err != nil {
					t.Error(err)
					return
				}
				if len(got) == 0 {
					return
				}
				mu.Lock()
				for _, m := range got {
					claimed[m.ID]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(claimed) != n {
		t.Fatalf("%d of %d messages claimed", len(claimed), n)
	}
	for id, k := range claimed {
		if k != 1 {
			t.Fatalf("%s claimed %d times", id, k)
		}
	}
}

// TestSQLiteMigratesVersion4 opens a database of the schema before the
// outbox kept a language, with a message queued: after the upgrade the
// message is still there, to be written in English as when it was queued.
func TestSQLiteMigratesVersion4(t *testing.T) {
	t0 := now().Truncate(time.Millisecond)
	path := sqliteAtVersion(t, 4, fmt.Sprintf(`INSERT INTO outbox (id, queue, channel, recipient, purpose, code, deliver, next_at, expires_at, created_at)
			VALUES ('m1', 'q', 'email', 'old@example.com', 'login', '123456', TRUE, %d, %d, %d)`, t0.UnixMilli(), t0.Add(time.Hour).UnixMilli(), t0.UnixMilli()))
	s, err := openSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer releaseSQLite(s)
	got, err := s.ClaimOutbox(context.Background(), "q", 10, t0, time.Minute)
	if err != nil || len(got) != 1 || got[0].To != "old@example.com" || got[0].Lang != "" {
		t.Fatalf("after the upgrade: %+v %v", got, err)
	}
}

// TestWriteBatchKeepsJobsApart puts code requests and sign-ins that wait for
// SQLite's writer into one batch (the writer is held until all are queued),
// and checks that each is answered as if it had been alone: refused
// requests and failed or panicking jobs leave nothing behind, the others
// are all committed.
func TestWriteBatchKeepsJobsApart(t *testing.T) {
	s := tempSQLite(t, "batch.db")
	ctx := context.Background()
	t0 := now().Truncate(time.Millisecond)
	codeHash := []byte("good")
	match := func(h []byte) bool { return bytes.Equal(h, codeHash) }
	for i := range 3 {
		c, _ := queued(fmt.Sprint("s", i), fmt.Sprintf("s%d@example.com", i), t0)
		c.Hash = codeHash
		if err := storeSQL(s).SaveCode(ctx, c); err != nil {
			t.Fatal(err)
		}
	}

	h, err := s.db.enter(ctx) // the writer is busy until every job waits
	if err != nil {
		t.Fatal(err)
	}
	const requests = 8
	shared := RateLimit{Key: "shared", Count: 4, Window: time.Hour}
	var wg sync.WaitGroup
	refused := make(chan string, requests)
	results := make(chan error, requests+4)
	for i := range requests {
		wg.Go(func() {
			c, m := queued(fmt.Sprint("q", i), fmt.Sprintf("q%d@example.com", i), t0)
			wait, _, err := s.QueueCode(ctx, []RateLimit{shared}, c, m, t0)
			if wait > 0 {
				refused <- c.ID
			}
			results <- err
		})
	}
	signIn := func(i int, match func([]byte) bool) SignInResult {
		a := Alias{Kind: KindEmail, Value: fmt.Sprintf("s%d@example.com", i)}
		res, err := s.SignIn(ctx, SignIn{Realm: defaultRealm, Alias: a, Key: a.Key(), MaxAttempts: 5, Create: true, Match: match,
			Session: Session{ID: fmt.Sprint("sess", i), CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}, RefreshHash: []byte(fmt.Sprint("r", i))}, t0)
		results <- err
		return res
	}
	var good, wrong SignInResult
	wg.Go(func() { good = signIn(0, match) })
	wg.Go(func() { wrong = signIn(1, func([]byte) bool { return false }) })
	var failedErr, panicErr error
	wg.Go(func() {
		failedErr = s.db.inTx(ctx, func(tx sqlTx) error {
			if _, err := tx.ExecContext(ctx, `DELETE FROM codes WHERE id = 's2'`); err != nil {
				return err
			}
			return errors.New("changed its mind")
		})
	})
	wg.Go(func() {
		panicErr = s.db.inTx(ctx, func(tx sqlTx) error {
			if _, err := tx.ExecContext(ctx, `DELETE FROM codes WHERE id = 's2'`); err != nil {
				return err
			}
			panic("boom")
		})
	})
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		s.db.batch.mu.Lock()
		n := len(s.db.batch.waiting)
		s.db.batch.mu.Unlock()
		if n == requests+4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d jobs queued, want %d", n, requests+4)
		}
	}
	h.leave()
	wg.Wait()
	close(results)
	close(refused)
	for err := range results {
		if err != nil {
			t.Errorf("job failed: %v", err)
		}
	}
	if failedErr == nil || panicErr == nil || !strings.Contains(panicErr.Error(), "boom") {
		t.Errorf("failing jobs answered %v and %v", failedErr, panicErr)
	}
	if good.Code != CodeOK || good.User.ID == "" || wrong.Code != CodeWrong {
		t.Errorf("sign-ins: %+v, %+v", good, wrong)
	}

	count := func(q string, args ...any) int {
		var n int
		if err := s.rdb.QueryRowContext(ctx, q, args...).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	var ids []string
	for id := range refused {
		ids = append(ids, id)
		if n := count(`SELECT COUNT(*) FROM codes WHERE id = ?`, id) + count(`SELECT COUNT(*) FROM outbox WHERE id = ?`, id); n != 0 {
			t.Errorf("refused request %s left %d rows", id, n)
		}
	}
	if len(ids) != requests-shared.Count {
		t.Errorf("%d requests refused, want %d", len(ids), requests-shared.Count)
	}
	if n := count(`SELECT COUNT(*) FROM outbox`); n != shared.Count {
		t.Errorf("%d messages queued, want %d", n, shared.Count)
	}
	if n := count(`SELECT COUNT(*) FROM codes WHERE id = 's2'`); n != 1 {
		t.Error("a failed job's delete stayed")
	}
	if n := count(`SELECT COUNT(*) FROM codes WHERE id = 's0'`); n != 0 {
		t.Error("the signed-in code was not spent")
	}
	if n := count(`SELECT attempts FROM codes WHERE id = 's1'`); n != 1 {
		t.Errorf("the wrong guess counted %d attempts, want 1", n)
	}
	if n := count(`SELECT COUNT(*) FROM sessions WHERE id = 'sess0'`); n != 1 {
		t.Error("the session of the sign-in is missing")
	}
}

// TestSQLiteMigratesVersion5 opens a database of the schema before its
// tables were rebuilt WITHOUT ROWID, with a row in each: after the upgrade
// every row is there and in use (the session and its refresh token, the
// code, the lock, the passkey, the secret), the alias indexes still refuse
// a second holder, deleting a user still takes its sessions, refresh tokens
// and passkeys with it, and an alias lookup still goes through its index.
func TestSQLiteMigratesVersion5(t *testing.T) {
	t0 := now().Truncate(time.Millisecond)
	later := t0.Add(time.Hour).UnixMilli()
	refresh := opaqueHash("refresh-token")
	path := sqliteAtVersion(t, 5,
		`INSERT INTO secrets (name, value) VALUES ('hmac', x'00112233')`,
		`INSERT INTO users (id, realm, email, email_verified, roles, created_at) VALUES ('u1', 'default', 'old@example.com', TRUE, 'admin', 1000)`,
		`INSERT INTO users (id, realm, mobile, mobile_verified, created_at) VALUES ('u2', 'default', '+15005550006', TRUE, 1000)`,
		`INSERT INTO users (id, realm, email, disabled, created_at) VALUES ('u3', 'default', 'off@example.com', TRUE, 1000)`,
		fmt.Sprintf(`INSERT INTO sessions (id, user_id, created_at, expires_at, client_ip, last_used) VALUES ('s1', 'u1', %d, %d, '192.0.2.1', %d)`, t0.UnixMilli(), later, t0.UnixMilli()),
		fmt.Sprintf(`INSERT INTO refresh_tokens (hash, session_id, expires_at) VALUES (x'%x', 's1', %d)`, refresh, later),
		fmt.Sprintf(`INSERT INTO codes (alias, purpose, id, hash, expires_at, created_at) VALUES ('email:old@example.com', 'login', 'c1', x'aabb', %d, %d)`, later, t0.UnixMilli()),
		fmt.Sprintf(`INSERT INTO failures (alias, count, locked_until) VALUES ('email:locked@example.com', 10, %d)`, later),
		`INSERT INTO passkeys (realm, id, user_id, public_key, aaguid, name, created_at) VALUES ('default', x'0102', 'u1', x'a1', x'00', 'laptop', 1000)`,
		fmt.Sprintf(`INSERT INTO passkey_ceremonies (challenge_hash, kind, realm, expires_at) VALUES (x'cc', 'login', 'default', %d)`, later),
	)
	s, err := openSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer releaseSQLite(s)
	ctx := context.Background()

	// The upgrade's large page cache is not kept by the writer.
	var cache int
	if err := s.db.QueryRowContext(ctx, `PRAGMA cache_size`).Scan(&cache); err != nil || cache != -2000 {
		t.Fatalf("the writer's page cache after the upgrade: %d %v", cache, err)
	}
	for _, table := range []string{"secrets", "users", "codes", "sessions", "refresh_tokens", "failures", "passkeys", "passkey_ceremonies"} {
		var ddl string
		if err := s.db.QueryRowContext(ctx, `SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?`, table).Scan(&ddl); err != nil {
			t.Fatalf("%s: %v", table, err)
		}
		if !strings.HasSuffix(ddl, "WITHOUT ROWID") {
			t.Errorf("%s is not WITHOUT ROWID: %s", table, ddl)
		}
	}
	if v, err := s.Secret(ctx, "hmac", func() ([]byte, error) { return []byte("new"), nil }); err != nil || !bytes.Equal(v, []byte{0x00, 0x11, 0x22, 0x33}) {
		t.Fatalf("secret after the upgrade: %x %v", v, err)
	}
	su, err := s.SessionUser(ctx, "s1", t0)
	if err != nil || su.User.ID != "u1" || su.User.Email != "old@example.com" || len(su.User.Roles) != 1 {
		t.Fatalf("session after the upgrade: %+v %v", su, err)
	}
	if sess, err := s.RotateRefresh(ctx, refresh, opaqueHash("next"), t0.Add(time.Hour), t0); err != nil || sess.ID != "s1" {
		t.Fatalf("refresh after the upgrade: %+v %v", sess, err)
	}
	if _, res, err := s.RedeemCode(ctx, "email:old@example.com", purposeLogin, func(h []byte) bool { return bytes.Equal(h, []byte{0xaa, 0xbb}) }, 5, t0); err != nil || res != CodeOK {
		t.Fatalf("code after the upgrade: %v %v", res, err)
	}
	if until, err := s.LockedUntil(ctx, "email:locked@example.com"); err != nil || until.UnixMilli() != later {
		t.Fatalf("lock after the upgrade: %v %v", until, err)
	}
	if pk, err := storeSQL(s).PasskeyByID(ctx, defaultRealm, []byte{1, 2}); err != nil || pk.UserID != "u1" || pk.Name != "laptop" {
		t.Fatalf("passkey after the upgrade: %+v %v", pk, err)
	}
	if _, err := s.TakeCeremony(ctx, []byte{0xcc}); err != nil {
		t.Fatalf("ceremony after the upgrade: %v", err)
	}

	// The alias indexes hold: a second holder is refused, in each kind.
	for _, a := range []Alias{{Kind: KindEmail, Value: "old@example.com"}, {Kind: KindMobile, Value: "+15005550006"}} {
		var taken *AliasTakenError
		if _, err := s.CreateUser(ctx, defaultRealm, []Alias{a}, nil, t0); !errors.As(err, &taken) {
			t.Fatalf("a second holder of %v: %v", a, err)
		}
	}
	// Sign-in finds the mobile-only user by its alias, and still refuses
	// the disabled one.
	if u, created, err := s.Login(ctx, defaultRealm, Alias{Kind: KindMobile, Value: "+15005550006"}, true, t0); err != nil || created || u.ID != "u2" {
		t.Fatalf("mobile sign-in after the upgrade: %+v %v %v", u, created, err)
	}
	if _, _, err := s.Login(ctx, defaultRealm, Alias{Kind: KindEmail, Value: "off@example.com"}, true, t0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a disabled user signed in after the upgrade: %v", err)
	}
	var plan string
	rows, err := s.db.QueryContext(ctx, `EXPLAIN QUERY PLAN SELECT id FROM users WHERE realm = ? AND email = ?`, defaultRealm, "x@example.com")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan += detail + "; "
	}
	rows.Close()
	if !strings.Contains(plan, "users_realm_email") {
		t.Fatalf("an email lookup does not use its index: %s", plan)
	}

	// Foreign keys still cascade from the rebuilt tables (DeleteUser
	// deletes the dependent rows itself, so this goes around it).
	if _, err := s.db.ExecContext(ctx, `DELETE FROM users WHERE id = 'u1'`); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`SELECT COUNT(*) FROM sessions`, `SELECT COUNT(*) FROM refresh_tokens`, `SELECT COUNT(*) FROM passkeys`} {
		var n int
		if err := s.db.QueryRowContext(ctx, q).Scan(&n); err != nil || n != 0 {
			t.Fatalf("%s after deleting the user: %d %v", q, n, err)
		}
	}
}

// TestReadBeforeWriteNeverWaitsForTheWriter reads a sign-in's limits
// (PeekLocked) while a writer holds SQLite's one write connection, and
// again when it is free: the first is answered from the read pool at once,
// both see the same committed state, and the read gives the writer's gate
// back.
func TestReadBeforeWriteNeverWaitsForTheWriter(t *testing.T) {
	s := tempSQLite(t, "peek.db")
	ctx := context.Background()
	t0 := now().Truncate(time.Millisecond)
	l := RateLimit{Key: "failed-ip:192.0.2.1", Count: 1, Window: time.Hour}
	if _, err := s.Hit(ctx, l, t0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Failure(ctx, "email:a@example.com", 1, time.Hour, t0); err != nil {
		t.Fatal(err)
	}
	// check may run on another goroutine, where t.Fatal may not be called.
	check := func(when string) error {
		wait, until, err := s.PeekLocked(ctx, l, "email:a@example.com", t0)
		if err != nil || wait <= 0 || until.Sub(t0) != time.Hour {
			return fmt.Errorf("%s: retry after %v, locked until %v, %v", when, wait, until, err)
		}
		return nil
	}

	h, err := s.db.enter(ctx) // a writer holds the connection
	if err != nil {
		t.Fatal(err)
	}
	defer h.leave() // on a failure too; leaving twice is leaving once
	done := make(chan error, 1)
	go func() { done <- check("with the writer busy") }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("PeekLocked waited for the writer")
	}
	h.leave()
	if err := check("with the writer free"); err != nil {
		t.Fatal(err)
	}
	// The store's own background work (purges, checkpoints) takes the
	// gate now and then: what must not happen is that it stays taken.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		if h := s.db.tryEnter(); h != nil {
			h.leave()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the read kept the writer's gate")
		}
	}
}

// TestRepeatedFailureLogsARunOnce: a failure that recurs on every tick
// (a checkpoint of a removed database, 40 a second) is one line, then one
// a minute with the count of those not logged; another error is logged at
// once, and so is the end of the run.
func TestRepeatedFailureLogsARunOnce(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	log := zap.New(core)
	var r repeatedFailure
	t0 := time.Unix(1_800_000_000, 0)
	gone := errors.New("unable to open database file")
	tick := func(i int, err error) {
		r.observe(log, zapcore.ErrorLevel, "sqlite checkpoint", err, t0.Add(time.Duration(i)*checkpointEvery), zap.String("store", "x.db"))
	}
	lines := func() []string {
		var out []string
		for _, e := range logs.TakeAll() {
			s := e.Level.String() + " " + e.Message
			for _, k := range []string{"error", "failures_not_logged", "failures"} {
				if v, ok := e.ContextMap()[k]; ok {
					s += fmt.Sprintf(" %s=%v", k, v)
				}
			}
			out = append(out, s)
		}
		return out
	}
	expect := func(want ...string) {
		t.Helper()
		if got := lines(); !slices.Equal(got, want) {
			t.Fatalf("logged %q, want %q", got, want)
		}
	}

	for i := range 10 {
		tick(i, nil)
	}
	expect()
	perMinute := int(time.Minute / checkpointEvery)
	for i := 10; i < 10+perMinute; i++ {
		tick(i, gone)
	}
	expect("error sqlite checkpoint error=unable to open database file")
	tick(10+perMinute, gone)
	expect(fmt.Sprintf("error sqlite checkpoint error=unable to open database file failures_not_logged=%d", perMinute-1))
	tick(11+perMinute, errors.New("disk I/O error"))
	expect("error sqlite checkpoint error=disk I/O error")
	tick(12+perMinute, nil)
	tick(13+perMinute, nil)
	expect(fmt.Sprintf("info sqlite checkpoint works again failures=%d", perMinute+2))
	tick(14+perMinute, gone)
	expect("error sqlite checkpoint error=unable to open database file")
}
