package passwordless

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// postgresHandles shares one connection pool per DSN across handler
// instances and config reloads; the last user to go closes it.
var postgresHandles = caddy.NewUsagePool()

// postgresStore keeps the state in PostgreSQL, so several Caddy instances
// share users, codes, sessions, keys and rate limits.
type postgresStore struct {
	*sqlStore
	dsn string
	// identity names the database however the DSN reaches it (see
	// storeIdentity).
	identity string
}

// defaultPostgresSchema keeps the plugin's tables apart from the
// application's when they share a database. A search_path in the DSN
// chooses another schema.
const defaultPostgresSchema = "passwordless"

func openPostgres(dsn string) (*postgresStore, error) {
	return openShared(postgresHandles, dsn, func() (*postgresStore, error) { return newPostgres(dsn) })
}

func releasePostgres(s *postgresStore) error {
	_, err := postgresHandles.Delete(s.dsn)
	return err
}

// postgresConfig parses a DSN and sets the schema the store lives in. name
// says where that is without the credentials, for logs and messages.
func postgresConfig(dsn string) (cfg *pgx.ConnConfig, schema, name string, err error) {
	cfg, err = pgx.ParseConfig(dsn)
	if err != nil {
		// pgx's message can quote the DSN, password included.
		return nil, "", "", fmt.Errorf("postgres: the connection string could not be parsed")
	}
	schema = strings.TrimSpace(strings.Split(cfg.RuntimeParams["search_path"], ",")[0])
	if schema == "" {
		schema = defaultPostgresSchema
		cfg.RuntimeParams["search_path"] = schema
	}
	name = fmt.Sprintf("postgres://%s:%d/%s (schema %s)", cfg.Host, cfg.Port, cfg.Database, schema)
	return cfg, schema, name, nil
}

// postgresStoreExists reports whether the store's tables are in the DSN's
// database, without creating anything, and names where it looked.
func postgresStoreExists(ctx context.Context, dsn string) (exists bool, name string, err error) {
	cfg, schema, name, err := postgresConfig(dsn)
	if err != nil {
		return false, "", err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return false, name, fmt.Errorf("connecting to %s: %w", name, err)
	}
	defer conn.Close(ctx)
	err = conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM information_schema.tables
		WHERE table_schema = $1 AND table_name = 'schema_version')`, schema).Scan(&exists)
	if err != nil {
		return false, name, fmt.Errorf("reading %s: %w", name, err)
	}
	return exists, name, nil
}

func newPostgres(dsn string) (*postgresStore, error) {
	cfg, schema, name, err := postgresConfig(dsn)
	if err != nil {
		return nil, err
	}
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(20)
	db.SetMaxIdleConns(10)
	if err := migratePostgres(db, schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("preparing %s: %w", name, err)
	}
	id, err := postgresIdentity(db, schema)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("reading the identity of %s: %w", name, err)
	}
	pg := sqlDB{DB: db, dollar: true}
	s := &postgresStore{sqlStore: newSQLStore(pg, pg, name, postgresLock), dsn: dsn, identity: id}
	s.purgeInBackground()
	return s, nil
}

// postgresIdentity names the database the pool reaches: the cluster's
// system identifier (the same through any host name, address or port),
// the database and the store's schema.
func postgresIdentity(db *sql.DB, schema string) (string, error) {
	var cluster, database string
	err := db.QueryRow(`SELECT system_identifier::text, current_database() FROM pg_control_system()`).Scan(&cluster, &database)
	if err != nil {
		return "", err
	}
	return cluster + "/" + database + "/" + schema, nil
}

// postgresLock serialises read-then-write transactions on one key across
// every instance; released at commit or rollback.
func postgresLock(ctx context.Context, tx sqlTx, key string) error {
	_, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtextextended(?, 0))`, key)
	if err != nil {
		return fmt.Errorf("locking %q: %w", strings.SplitN(key, ":", 2)[0], err)
	}
	return nil
}

// openPostgresClient opens the store in the DSN's database as the command
// line uses it: it must be there, at the schema version of this build
// (only a server migrates), and nothing runs in the background. It
// answers where the store is, for messages.
func openPostgresClient(ctx context.Context, dsn string) (*sqlStore, string, error) {
	exists, name, err := postgresStoreExists(ctx, dsn)
	if err != nil {
		return nil, "", err
	}
	if !exists {
		return nil, "", fmt.Errorf("no passwordless store in %s: Caddy creates it when it first runs with this config (is --config right?)", name)
	}
	cfg, _, _, err := postgresConfig(dsn)
	if err != nil {
		return nil, "", err
	}
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(2)
	var version int
	if err := db.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&version); err != nil {
		db.Close()
		return nil, "", fmt.Errorf("reading the schema version of %s: %w", name, err)
	}
	if err := sameSchema(name, version, len(postgresMigrations)); err != nil {
		db.Close()
		return nil, "", err
	}
	pg := sqlDB{DB: db, dollar: true}
	return newSQLStore(pg, pg, name, postgresLock), name, nil
}

var postgresMigrations = []string{
	schemaV1("BYTEA", "BIGINT"),
	schemaAccess(true),
	schemaOutbox("BYTEA", "BIGINT", ""),
	schemaPasskeys("BYTEA", "BIGINT"),
	schemaOutboxLang,
}

// migratePostgres brings the schema up to date. Instances starting at the
// same time take turns on an advisory lock.
func migratePostgres(db *sql.DB, schema string) error {
	ctx := context.Background()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('caddy-passwordless migrate', 0))`); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `CREATE SCHEMA IF NOT EXISTS `+pgx.Identifier{schema}.Sanitize()); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
		return err
	}
	var version int
	err = tx.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&version)
	switch {
	case err == sql.ErrNoRows:
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES (0)`); err != nil {
			return err
		}
	case err != nil:
		return err
	}
	if version > len(postgresMigrations) {
		return fmt.Errorf("database schema version %d is newer than this build knows (%d)", version, len(postgresMigrations))
	}
	for i := version; i < len(postgresMigrations); i++ {
		if _, err := tx.ExecContext(ctx, postgresMigrations[i]); err != nil {
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE schema_version SET version = $1`, len(postgresMigrations)); err != nil {
		return err
	}
	return tx.Commit()
}

// Interface guards
var (
	_ Store            = (*postgresStore)(nil)
	_ caddy.Destructor = (*postgresStore)(nil)
)
