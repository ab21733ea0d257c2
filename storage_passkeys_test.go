package passwordless

import (
	"bytes"
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// testPasskeys is the passkey part of the Store contract: ids unique per
// realm, the per-user maximum under concurrency, the counter rule decided
// in one statement, and passkeys going with their user.
func testPasskeys(t *testing.T, s Store) {
	ctx := context.Background()
	t0 := now().Truncate(time.Millisecond)
	alice, err := s.CreateUser(ctx, defaultRealm, []Alias{{Kind: KindEmail, Value: "alice@example.com"}}, nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	bob, err := s.CreateUser(ctx, defaultRealm, []Alias{{Kind: KindEmail, Value: "bob@example.com"}}, nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	other, err := s.CreateUser(ctx, "other", []Alias{{Kind: KindEmail, Value: "alice@example.com"}}, nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	pk := Passkey{Realm: defaultRealm, ID: []byte("cred-1"), UserID: alice.ID, PublicKey: []byte("cose"), SignCount: 5,
		AAGUID: make([]byte, 16), Transports: []string{"internal", "hybrid"}, BackupEligible: true, Name: "Laptop", CreatedAt: t0}
	if err := s.AddPasskey(ctx, pk, 10); err != nil {
		t.Fatal(err)
	}
	got, err := storeSQL(s).PasskeyByID(ctx, defaultRealm, []byte("cred-1"))
	if err != nil || got.UserID != alice.ID || got.SignCount != 5 || !bytes.Equal(got.PublicKey, []byte("cose")) ||
		len(got.Transports) != 2 || !got.BackupEligible || got.BackupState || got.Name != "Laptop" ||
		!got.CreatedAt.Equal(t0) || !got.LastUsedAt.IsZero() {
		t.Fatalf("stored passkey: %+v %v", got, err)
	}

	// A credential id belongs to one account of a realm.
	taken := pk
	taken.UserID = bob.ID
	if err := s.AddPasskey(ctx, taken, 10); !errors.Is(err, ErrPasskeyTaken) {
		t.Fatalf("another user took a credential id: %v", err)
	}
	elsewhere := pk
	elsewhere.Realm, elsewhere.UserID = "other", other.ID
	if err := s.AddPasskey(ctx, elsewhere, 10); err != nil {
		t.Fatalf("the same id in another realm: %v", err)
	}
	if _, err := storeSQL(s).PasskeyByID(ctx, "third", []byte("cred-1")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a passkey found in a realm it is not in: %v", err)
	}

	// A sign-in's one read: the passkey, its owner and the client's
	// budget of failures, which waits once it is spent.
	budget := RateLimit{Key: "failed-ip:owner-test", Count: 1, Window: time.Hour}
	gotPK, owner, wait, err := s.PasskeyOwner(ctx, defaultRealm, []byte("cred-1"), budget, t0)
	if err != nil || wait != 0 || gotPK.UserID != alice.ID || gotPK.SignCount != 5 || gotPK.Name != "Laptop" ||
		len(gotPK.Transports) != 2 || owner.ID != alice.ID || owner.Email != "alice@example.com" || owner.Realm != defaultRealm {
		t.Fatalf("passkey owner: %+v %+v %v %v", gotPK, owner, wait, err)
	}
	if w, err := s.Hit(ctx, budget, t0); err != nil || w != 0 {
		t.Fatal(w, err)
	}
	if _, _, wait, err := s.PasskeyOwner(ctx, defaultRealm, []byte("cred-1"), budget, t0); err != nil || wait <= 0 {
		t.Fatalf("a spent budget did not wait: %v %v", wait, err)
	}
	if _, owner, _, err := s.PasskeyOwner(ctx, "other", []byte("cred-1"), budget, t0); err != nil || owner.ID != other.ID {
		t.Fatalf("the other realm's owner: %+v %v", owner, err)
	}
	if _, _, _, err := s.PasskeyOwner(ctx, "third", []byte("cred-1"), budget, t0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("an owner found in a realm without the passkey: %v", err)
	}

	// The counter moves forward only; a refused use keeps what was stored.
	if err := s.UsePasskey(ctx, defaultRealm, []byte("cred-1"), 6, true, true, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []uint32{6, 3, 0} {
		if err := s.UsePasskey(ctx, defaultRealm, []byte("cred-1"), c, true, false, t0.Add(2*time.Minute)); !errors.Is(err, ErrCounterRegressed) {
			t.Fatalf("counter %d after 6: %v", c, err)
		}
	}
	got, _ = storeSQL(s).PasskeyByID(ctx, defaultRealm, []byte("cred-1"))
	if got.SignCount != 6 || !got.BackupState || !got.LastUsedAt.Equal(t0.Add(time.Minute)) {
		t.Fatalf("a refused use changed the passkey: %+v", got)
	}
	if err := s.UsePasskey(ctx, defaultRealm, []byte("nope"), 1, false, false, t0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("use of an unknown passkey: %v", err)
	}

	// Synced passkeys keep 0: that passes every time, and the backup
	// flags may change.
	synced := Passkey{Realm: defaultRealm, ID: []byte("cred-0"), UserID: alice.ID, PublicKey: []byte("k"), AAGUID: make([]byte, 16), Name: "Phone", CreatedAt: t0.Add(time.Second)}
	if err := s.AddPasskey(ctx, synced, 10); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := s.UsePasskey(ctx, defaultRealm, []byte("cred-0"), 0, true, true, t0); err != nil {
			t.Fatalf("a zero counter refused: %v", err)
		}
	}
	if got, _ := storeSQL(s).PasskeyByID(ctx, defaultRealm, []byte("cred-0")); !got.BackupEligible || !got.BackupState {
		t.Fatalf("backup flags not updated: %+v", got)
	}

	// Two sign-ins presenting the same counter: one passes.
	var passed atomic.Int32
	concurrently(8, func(int) int {
		if s.UsePasskey(ctx, defaultRealm, []byte("cred-1"), 7, true, true, t0) == nil {
			passed.Add(1)
		}
		return 0
	})
	if passed.Load() != 1 {
		t.Fatalf("%d concurrent uses of counter 7 passed", passed.Load())
	}

	list, err := s.Passkeys(ctx, alice.ID)
	if err != nil || len(list) != 2 || string(list[0].ID) != "cred-1" || string(list[1].ID) != "cred-0" {
		t.Fatalf("list: %+v %v", list, err)
	}
	if renamed, err := s.RenamePasskey(ctx, alice.ID, []byte("cred-0"), "Work phone"); err != nil || renamed.Name != "Work phone" {
		t.Fatalf("rename: %+v %v", renamed, err)
	}
	if _, err := s.RenamePasskey(ctx, bob.ID, []byte("cred-0"), "Mine"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("renamed another user's passkey: %v", err)
	}
	if _, err := s.DeletePasskey(ctx, bob.ID, []byte("cred-0")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted another user's passkey: %v", err)
	}
	if n, err := s.DeletePasskey(ctx, alice.ID, []byte("cred-0")); err != nil || n != 1 {
		t.Fatalf("delete: %d %v", n, err)
	}
	if _, err := storeSQL(s).PasskeyByID(ctx, defaultRealm, []byte("cred-0")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a deleted passkey is still found: %v", err)
	}

	// The maximum holds under concurrent registrations.
	var added atomic.Int32
	concurrently(6, func(i int) int {
		p := Passkey{Realm: defaultRealm, ID: []byte{'b', byte(i)}, UserID: bob.ID, PublicKey: []byte("k"), AAGUID: make([]byte, 16), Name: "k", CreatedAt: t0}
		err := s.AddPasskey(ctx, p, 3)
		switch {
		case err == nil:
			added.Add(1)
		case !errors.Is(err, ErrTooManyPasskeys):
			t.Error(err)
		}
		return 0
	})
	if added.Load() != 3 {
		t.Fatalf("%d passkeys added with a maximum of 3", added.Load())
	}
	if n, err := s.DeletePasskey(ctx, bob.ID, nil); err != nil || n != 3 {
		t.Fatalf("delete all: %d %v", n, err)
	}

	// A deleted user's passkeys go with it.
	if err := s.DeleteUser(ctx, alice.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := storeSQL(s).PasskeyByID(ctx, defaultRealm, []byte("cred-1")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a deleted user's passkey is still found: %v", err)
	}
	if _, err := storeSQL(s).PasskeyByID(ctx, "other", []byte("cred-1")); err != nil {
		t.Fatalf("the other realm's passkey went too: %v", err)
	}
}

// testCeremonies: a registration ceremony is taken once, a sign-in
// challenge spent once, and both are purged when they expire.
// testPasskeySignIn: the challenge, the counter and the session in one
// transaction; a challenge serves once, and a counter that does not move
// forward leaves the challenge spent and starts no session.
func testPasskeySignIn(t *testing.T, s Store) {
	ctx := context.Background()
	t0 := now().Truncate(time.Millisecond)
	u, err := s.CreateUser(ctx, defaultRealm, []Alias{{Kind: KindEmail, Value: "pk@example.com"}}, nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	pk := Passkey{Realm: defaultRealm, ID: []byte("cred-si"), UserID: u.ID, PublicKey: []byte("cose"), SignCount: 5, AAGUID: make([]byte, 16), Name: "Key", CreatedAt: t0}
	if err := s.AddPasskey(ctx, pk, 10); err != nil {
		t.Fatal(err)
	}
	ceremony := func(ch string) Ceremony {
		return Ceremony{ChallengeHash: challengeHash([]byte(ch)), Kind: ceremonyLogin, Realm: defaultRealm, ExpiresAt: t0.Add(time.Minute)}
	}
	session := func(id string) Session {
		return Session{ID: id, UserID: u.ID, CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}
	}
	spent, err := s.PasskeySignIn(ctx, ceremony("one"), pk.ID, 6, true, true, session("pk-s1"), []byte("r1"), t0)
	if err != nil || !spent {
		t.Fatalf("sign in: %v %v", spent, err)
	}
	if su, err := s.SessionUser(ctx, "pk-s1", t0); err != nil || su.User.ID != u.ID {
		t.Fatalf("session: %+v %v", su, err)
	}
	if got, _ := storeSQL(s).PasskeyByID(ctx, defaultRealm, pk.ID); got.SignCount != 6 || !got.BackupEligible || !got.BackupState {
		t.Fatalf("passkey after use: %+v", got)
	}
	// The same challenge again: nothing happens.
	if spent, err := s.PasskeySignIn(ctx, ceremony("one"), pk.ID, 7, true, true, session("pk-s2"), []byte("r2"), t0); err != nil || spent {
		t.Fatalf("second use of a challenge: %v %v", spent, err)
	}
	if _, err := s.SessionUser(ctx, "pk-s2", t0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a spent challenge started a session: %v", err)
	}
	// A counter that does not move forward: refused, the stored one kept,
	// and the challenge is spent all the same.
	if _, err := s.PasskeySignIn(ctx, ceremony("two"), pk.ID, 6, true, true, session("pk-s3"), []byte("r3"), t0); !errors.Is(err, ErrCounterRegressed) {
		t.Fatalf("counter not moving forward: %v", err)
	}
	if _, err := s.SessionUser(ctx, "pk-s3", t0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a regressed counter started a session: %v", err)
	}
	if again, _ := s.SpendChallenge(ctx, ceremony("two")); again {
		t.Fatal("the challenge of a refused sign-in was not spent")
	}
	if got, _ := storeSQL(s).PasskeyByID(ctx, defaultRealm, pk.ID); got.SignCount != 6 {
		t.Fatalf("stored counter changed to %d", got.SignCount)
	}
	// A passkey deleted meanwhile.
	if _, err := s.DeletePasskey(ctx, u.ID, pk.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PasskeySignIn(ctx, ceremony("three"), pk.ID, 9, true, true, session("pk-s4"), []byte("r4"), t0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted passkey: %v", err)
	}
}

func testCeremonies(t *testing.T, s Store) {
	ctx := context.Background()
	t0 := now().Truncate(time.Millisecond)
	reg := Ceremony{ChallengeHash: []byte("h-reg"), Kind: ceremonyRegister, Realm: defaultRealm, SessionID: "s1", UserID: "u1",
		Name: "Laptop", Data: []byte(`{"challenge":"x"}`), ExpiresAt: t0.Add(time.Minute)}
	if err := s.SaveCeremony(ctx, reg); err != nil {
		t.Fatal(err)
	}
	var took atomic.Int32
	concurrently(8, func(int) int {
		c, err := s.TakeCeremony(ctx, []byte("h-reg"))
		switch {
		case err == nil:
			took.Add(1)
			if c.Kind != ceremonyRegister || c.SessionID != "s1" || c.UserID != "u1" || c.Name != "Laptop" ||
				string(c.Data) != `{"challenge":"x"}` || !c.ExpiresAt.Equal(t0.Add(time.Minute)) {
				t.Errorf("taken ceremony: %+v", c)
			}
		case !errors.Is(err, ErrNotFound):
			t.Error(err)
		}
		return 0
	})
	if took.Load() != 1 {
		t.Fatalf("a ceremony was taken %d times", took.Load())
	}

	var spent atomic.Int32
	login := Ceremony{ChallengeHash: []byte("h-login"), Kind: ceremonyLogin, Realm: defaultRealm, ExpiresAt: t0.Add(time.Minute)}
	concurrently(8, func(int) int {
		ok, err := s.SpendChallenge(ctx, login)
		if err != nil {
			t.Error(err)
		}
		if ok {
			spent.Add(1)
		}
		return 0
	})
	if spent.Load() != 1 {
		t.Fatalf("a challenge was spent %d times", spent.Load())
	}

	s.SaveCeremony(ctx, Ceremony{ChallengeHash: []byte("h-old"), Kind: ceremonyRegister, Realm: defaultRealm, ExpiresAt: t0.Add(time.Minute)})
	s.SaveCeremony(ctx, Ceremony{ChallengeHash: []byte("h-new"), Kind: ceremonyRegister, Realm: defaultRealm, ExpiresAt: t0.Add(time.Hour)})
	if err := s.Purge(ctx, t0.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.TakeCeremony(ctx, []byte("h-old")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("an expired ceremony was kept: %v", err)
	}
	if _, err := s.TakeCeremony(ctx, []byte("h-new")); err != nil {
		t.Fatalf("a live ceremony was purged: %v", err)
	}
}

// TestSQLiteMigratesVersion3 opens a database of the schema before
// passkeys, with a user, and gives that user a passkey after the upgrade.
func TestSQLiteMigratesVersion3(t *testing.T) {
	path := sqliteAtVersion(t, 3, `INSERT INTO users (id, email, email_verified, created_at) VALUES ('u1', 'old@example.com', TRUE, 1000)`)
	s, err := openSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer releaseSQLite(s)
	upgradedStoreTakesPasskeys(t, s)
}

// TestPostgresMigratesVersion3 is TestSQLiteMigratesVersion3 on
// PostgreSQL.
func TestPostgresMigratesVersion3(t *testing.T) {
	dsn := postgresDSN(t)
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	db := stdlib.OpenDB(*cfg)
	for _, q := range append([]string{
		`CREATE SCHEMA ` + cfg.RuntimeParams["search_path"],
		`CREATE TABLE schema_version (version INTEGER NOT NULL)`,
		`INSERT INTO schema_version (version) VALUES (3)`,
	}, append(postgresMigrations[:3:3],
		`INSERT INTO users (id, email, email_verified, created_at) VALUES ('u1', 'old@example.com', TRUE, 1000)`)...) {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%.60s: %v", q, err)
		}
	}
	db.Close()
	s, err := openPostgres(dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer releasePostgres(s)
	upgradedStoreTakesPasskeys(t, s)
}

func upgradedStoreTakesPasskeys(t *testing.T, s Store) {
	t.Helper()
	ctx := context.Background()
	u, err := s.UserByAlias(ctx, defaultRealm, Alias{Kind: KindEmail, Value: "old@example.com"})
	if err != nil || u.ID != "u1" {
		t.Fatalf("user after migration: %+v %v", u, err)
	}
	pk := Passkey{Realm: defaultRealm, ID: []byte("c"), UserID: "u1", PublicKey: []byte("k"), AAGUID: make([]byte, 16), Name: "Key", CreatedAt: now()}
	if err := s.AddPasskey(ctx, pk, 10); err != nil {
		t.Fatalf("adding a passkey after migration: %v", err)
	}
	if list, err := s.Passkeys(ctx, "u1"); err != nil || len(list) != 1 {
		t.Fatalf("passkeys after migration: %+v %v", list, err)
	}
	if err := s.DeleteUser(ctx, "u1"); err != nil {
		t.Fatal(err)
	}
	if _, err := storeSQL(s).PasskeyByID(ctx, defaultRealm, []byte("c")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the passkey outlived its user: %v", err)
	}
}
