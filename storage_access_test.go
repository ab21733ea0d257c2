package passwordless

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// testRealms: one alias is a different user in each realm; the default
// realm is what a login without realm gets.
func testRealms(t *testing.T, s Store) {
	ctx := context.Background()
	t0 := now().Truncate(time.Millisecond)
	a := Alias{Kind: KindEmail, Value: "same@example.com"}
	d, _, err := s.Login(ctx, defaultRealm, a, true, t0)
	if err != nil || d.Realm != defaultRealm {
		t.Fatalf("default realm: %+v %v", d, err)
	}
	if _, _, err := s.Login(ctx, "other", a, false, t0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a user of one realm logged in to another: %v", err)
	}
	o, _, err := s.Login(ctx, "other", a, true, t0)
	if err != nil || o.ID == d.ID || o.Realm != "other" {
		t.Fatalf("other realm: %+v %v", o, err)
	}
	if u, _ := s.UserByAlias(ctx, "other", a); u.ID != o.ID {
		t.Fatal("lookup in the other realm found another user")
	}
	if u, _ := s.UserByAlias(ctx, defaultRealm, a); u.ID != d.ID {
		t.Fatal("lookup in the default realm found another user")
	}
	// Linking checks ownership within the user's realm only.
	m := Alias{Kind: KindMobile, Value: "+15550001111"}
	if _, err := s.LinkAlias(ctx, d.ID, m); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LinkAlias(ctx, o.ID, m); err != nil {
		t.Fatalf("an alias of one realm blocked linking in another: %v", err)
	}
	if us, _ := s.Users(ctx, "other"); len(us) != 1 || us[0].ID != o.ID {
		t.Fatalf("users of realm other: %+v", us)
	}
}

func testSessionUser(t *testing.T, s Store) {
	ctx := context.Background()
	t0 := now().Truncate(time.Millisecond)
	u, _, _ := s.Login(ctx, defaultRealm, Alias{Kind: KindEmail, Value: "su@example.com"}, true, t0)
	if err := s.CreateSession(ctx, Session{ID: "su1", UserID: u.ID, CreatedAt: t0, ExpiresAt: t0.Add(time.Hour), ClientIP: "192.0.2.7"}, []byte("r"), t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SessionUser(ctx, "nope", t0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown session: %v", err)
	}
	su, err := s.SessionUser(ctx, "su1", t0)
	if err != nil || !su.Active || su.User.ID != u.ID || su.User.Email != "su@example.com" || su.Session.ClientIP != "192.0.2.7" || su.User.Disabled {
		t.Fatalf("session user %+v %v", su, err)
	}
	// The state is read fresh: roles, disabled and aliases as they are now.
	if err := s.SetRoles(ctx, u.ID, []string{"b", "a", "b"}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetDisabled(ctx, u.ID, true); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LinkAlias(ctx, u.ID, Alias{Kind: KindEmail, Value: "su2@example.com"}); err != nil {
		t.Fatal(err)
	}
	su, _ = s.SessionUser(ctx, "su1", t0)
	if !slices.Equal(su.User.Roles, []string{"a", "b"}) || !su.User.Disabled || su.User.Email != "su2@example.com" {
		t.Fatalf("after changes: %+v", su.User)
	}
	// Last use is written at most once per lastUsedGranularity.
	later := t0.Add(lastUsedGranularity)
	su, _ = s.SessionUser(ctx, "su1", later)
	if !su.Session.LastUsed.Equal(later) {
		t.Fatalf("last used %v, want %v", su.Session.LastUsed, later)
	}
	su, _ = s.SessionUser(ctx, "su1", later.Add(time.Second))
	if !su.Session.LastUsed.Equal(later) {
		t.Fatalf("last used rewritten within a minute: %v", su.Session.LastUsed)
	}
	if su, _ := s.SessionUser(ctx, "su1", t0.Add(time.Hour)); su.Active {
		t.Fatal("expired session active")
	}
	s.RevokeSession(ctx, "su1")
	if su, _ := s.SessionUser(ctx, "su1", t0); su.Active {
		t.Fatal("revoked session active")
	}
}

func testAdmin(t *testing.T, s Store) {
	ctx := context.Background()
	t0 := now().Truncate(time.Millisecond)
	e := Alias{Kind: KindEmail, Value: "ann@example.com"}
	m := Alias{Kind: KindMobile, Value: "+15552223333"}
	u, err := s.CreateUser(ctx, "team", []Alias{e, m}, []string{"ops", "admin"}, t0)
	if err != nil || u.Email != e.Value || u.Mobile != m.Value || !u.EmailVerified || !u.MobileVerified ||
		!slices.Equal(u.Roles, []string{"admin", "ops"}) || u.Realm != "team" || !u.LastLogin.IsZero() || !u.CreatedAt.Equal(t0) {
		t.Fatalf("created %+v %v", u, err)
	}
	_, err = s.CreateUser(ctx, "team", []Alias{{Kind: KindEmail, Value: "bob@example.com"}, m}, nil, t0)
	var taken *AliasTakenError
	if !errors.As(err, &taken) || taken.OwnerID != u.ID || !errors.Is(err, ErrAliasTaken) {
		t.Fatalf("alias of another user: %v", err)
	}
	if _, err := s.UserByAlias(ctx, "team", Alias{Kind: KindEmail, Value: "bob@example.com"}); !errors.Is(err, ErrNotFound) {
		t.Fatal("a refused create left a user behind")
	}
	if _, err := s.CreateUser(ctx, "team", nil, nil, t0); err == nil {
		t.Fatal("a user without aliases was created")
	}
	if _, err := s.CreateUser(ctx, "team", []Alias{{Kind: KindEmail, Value: "x@example.com"}}, []string{"a,b"}, t0); err == nil {
		t.Fatal("a role with a comma was stored")
	}
	if err := s.SetRoles(ctx, "nope", nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("roles of an unknown user: %v", err)
	}
	if err := s.SetRoles(ctx, u.ID, nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.UserByID(ctx, u.ID); len(got.Roles) != 0 {
		t.Fatalf("roles not cleared: %v", got.Roles)
	}

	// A disabled user cannot log in, and nothing about it changes.
	if err := s.SetDisabled(ctx, u.ID, true); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Login(ctx, "team", e, true, t0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("disabled user logged in: %v", err)
	}
	if got, _ := s.UserByID(ctx, u.ID); !got.Disabled || !got.LastLogin.IsZero() {
		t.Fatalf("disabled login changed the user: %+v", got)
	}
	if err := s.SetDisabled(ctx, u.ID, false); err != nil {
		t.Fatal(err)
	}
	t1 := t0.Add(time.Minute)
	if got, _, err := s.Login(ctx, "team", e, false, t1); err != nil || !got.LastLogin.Equal(t1) {
		t.Fatalf("enabled login: %+v %v", got, err)
	}
	if err := s.SetDisabled(ctx, "nope", true); !errors.Is(err, ErrNotFound) {
		t.Fatalf("disabling an unknown user: %v", err)
	}

	// Sessions: listed newest first, revoked together.
	for i, id := range []string{"a1", "a2", "a3"} {
		at := t0.Add(time.Duration(i) * time.Second)
		if err := s.CreateSession(ctx, Session{ID: id, UserID: u.ID, CreatedAt: at, ExpiresAt: at.Add(time.Hour), ClientIP: "198.51.100.1"}, []byte("r"+id), at.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	s.RevokeSession(ctx, "a1")
	ss, err := s.Sessions(ctx, u.ID, t0)
	if err != nil || len(ss) != 2 || ss[0].ID != "a3" || ss[1].ID != "a2" || ss[0].ClientIP != "198.51.100.1" || !ss[1].LastUsed.Equal(t0.Add(time.Second)) {
		t.Fatalf("sessions %+v %v", ss, err)
	}
	if n, err := s.RevokeSessions(ctx, u.ID, t0); err != nil || n != 2 {
		t.Fatalf("revoked %d, %v", n, err)
	}
	if ss, _ := s.Sessions(ctx, u.ID, t0); len(ss) != 0 {
		t.Fatalf("sessions after revoking all: %+v", ss)
	}
	if _, err := s.RotateRefresh(ctx, []byte("ra3"), []byte("x"), t0.Add(time.Hour), t0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("refresh after revoking all: %v", err)
	}

	// Disabling ends the live sessions in the same transaction.
	s.CreateSession(ctx, Session{ID: "d1", UserID: u.ID, CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}, []byte("rd1"), t0.Add(time.Hour))
	if n, err := s.DisableUser(ctx, u.ID, t0); err != nil || n != 1 {
		t.Fatalf("disabled with %d sessions ended, %v", n, err)
	}
	if su, err := s.SessionUser(ctx, "d1", t0); err != nil || su.Active || !su.User.Disabled {
		t.Fatalf("after disabling: %+v %v", su, err)
	}
	if _, err := s.DisableUser(ctx, "nope", t0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("disabling an unknown user: %v", err)
	}
	if err := s.SetDisabled(ctx, u.ID, false); err != nil {
		t.Fatal(err)
	}

	// Delete: the user, its aliases and sessions go.
	s.CreateSession(ctx, Session{ID: "a4", UserID: u.ID, CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}, []byte("ra4"), t0.Add(time.Hour))
	if err := s.DeleteUser(ctx, u.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UserByID(ctx, u.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted user found: %v", err)
	}
	if _, err := s.SessionUser(ctx, "a4", t0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a deleted user's session: %v", err)
	}
	if _, err := s.CreateUser(ctx, "team", []Alias{e}, nil, t0); err != nil {
		t.Fatalf("a deleted user's alias is not free: %v", err)
	}
	if err := s.DeleteUser(ctx, u.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleting twice: %v", err)
	}

	// Clearing a lockout is ResetFailures on the realm's key.
	key := realmKey("team", e.Key())
	s.Failure(ctx, key, 1, time.Hour, t0)
	if err := s.ResetFailures(ctx, key); err != nil {
		t.Fatal(err)
	}
	if until, _ := s.LockedUntil(ctx, key); !until.IsZero() {
		t.Fatal("lockout not cleared")
	}
}

// TestSQLiteMigratesVersion1 opens a database made by the first schema,
// with a user and a session, and finds both after the upgrade, in the
// default realm.
func TestSQLiteMigratesVersion1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v1.db")
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=foreign_keys(ON)")
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		sqliteMigrations[0],
		`INSERT INTO users (id, email, email_verified, created_at) VALUES ('u1', 'old@example.com', TRUE, 1000)`,
		`INSERT INTO sessions (id, user_id, created_at, expires_at) VALUES ('s1', 'u1', 1000, 99999999999999)`,
		`INSERT INTO refresh_tokens (hash, session_id, expires_at) VALUES (x'01', 's1', 99999999999999)`,
		`PRAGMA user_version = 1`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	s, err := openSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer releaseSQLite(s)
	ctx := context.Background()
	u, err := s.UserByAlias(ctx, defaultRealm, Alias{Kind: KindEmail, Value: "old@example.com"})
	if err != nil || u.ID != "u1" || !u.EmailVerified {
		t.Fatalf("user after migration: %+v %v", u, err)
	}
	su, err := s.SessionUser(ctx, "s1", now())
	if err != nil || !su.Active || su.User.ID != "u1" {
		t.Fatalf("session after migration: %+v %v", su, err)
	}
	// The foreign keys still hold: deleting the user takes its session.
	if _, err := s.db.ExecContext(ctx, `DELETE FROM users WHERE id = 'u1'`); err != nil {
		t.Fatal(err)
	}
	var n int
	s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM sessions`).Scan(&n)
	if n != 0 {
		t.Fatal("sessions no longer reference users")
	}
}

// TestPostgresMigratesVersion1 is TestSQLiteMigratesVersion1 on
// PostgreSQL: users and sessions made by the first schema survive the
// upgrade, in the default realm, and aliases become unique per realm.
func TestPostgresMigratesVersion1(t *testing.T) {
	dsn := postgresDSN(t)
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	schema := cfg.RuntimeParams["search_path"]
	db := stdlib.OpenDB(*cfg)
	for _, q := range []string{
		`CREATE SCHEMA ` + schema,
		`CREATE TABLE schema_version (version INTEGER NOT NULL)`,
		`INSERT INTO schema_version (version) VALUES (1)`,
		postgresMigrations[0],
		`INSERT INTO users (id, email, email_verified, created_at) VALUES ('u1', 'old@example.com', TRUE, 1000)`,
		`INSERT INTO sessions (id, user_id, created_at, expires_at) VALUES ('s1', 'u1', 1000, 99999999999999)`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()
	s, err := openPostgres(dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer releasePostgres(s)
	ctx := context.Background()
	a := Alias{Kind: KindEmail, Value: "old@example.com"}
	if u, err := s.UserByAlias(ctx, defaultRealm, a); err != nil || u.ID != "u1" {
		t.Fatalf("user after migration: %+v %v", u, err)
	}
	if su, err := s.SessionUser(ctx, "s1", now()); err != nil || !su.Active || su.User.ID != "u1" {
		t.Fatalf("session after migration: %+v %v", su, err)
	}
	if _, err := s.CreateUser(ctx, "other", []Alias{a}, nil, now()); err != nil {
		t.Fatalf("the alias is still unique across realms: %v", err)
	}
}
