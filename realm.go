package passwordless

import (
	"crypto/sha256"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/caddyserver/caddy/v2"
)

// Realms: handlers with the same store and realm share users, sessions,
// keys, codes and limits, which makes them one sign-in. They must then
// agree on who may sign in, or the laxest would decide for all: an open
// block would register users, and its tokens would pass an invite-only
// one. Disagreement is refused when the configuration loads.

// signInRules describes what decides who may sign in, for comparing two
// handlers: desc for people (no codes in it), sum over all of it.
func signInRules(register *bool, allow []string, allowFile string, demo []DemoUser) (desc string, sum [32]byte) {
	reg := register == nil || *register
	pats := make([]string, len(allow))
	for i, a := range allow {
		pats[i] = strings.ToLower(a)
	}
	slices.Sort(pats)
	pats = slices.Compact(pats)
	var demos, codes []string
	for _, d := range demo {
		demos = append(demos, strings.ToLower(d.Alias))
		codes = append(codes, strings.ToLower(d.Alias)+"="+d.Code)
	}
	slices.Sort(demos)
	slices.Sort(codes)
	if allowFile != "" {
		if abs, err := filepath.Abs(allowFile); err == nil {
			allowFile = abs
		}
	}
	desc = fmt.Sprintf("register_new_users %t", reg)
	if len(pats) > 0 {
		desc += ", allow " + strings.Join(pats, " ")
	}
	if allowFile != "" {
		desc += ", allow_file " + allowFile
	}
	if len(demos) > 0 {
		desc += ", demo_user " + strings.Join(demos, " ")
	}
	sum = sha256.Sum256([]byte(desc + "\x00" + strings.Join(codes, "\x00")))
	return desc, sum
}

// adaptRealm compares the sign-in rules of Caddyfile blocks that share a
// store and realm while the Caddyfile is adapted, so that the error names
// both by file and line. Provision compares again with placeholders
// resolved, for JSON configs too.
func adaptRealm(state map[string]any, p *Passwordless, where string) error {
	type claim struct {
		where, desc string
		sum         [32]byte
	}
	claims, _ := state["passwordless.realms"].(map[string]claim)
	if claims == nil {
		claims = make(map[string]claim)
		state["passwordless.realms"] = claims
	}
	store, realm := "sqlite\x00", p.Realm
	if p.Storage != nil {
		store = p.Storage.Driver + "\x00" + p.Storage.DSN
	}
	if realm == "" {
		realm = defaultRealm
	}
	c := claim{where: where}
	c.desc, c.sum = signInRules(p.RegisterNewUsers, p.Allow, p.AllowFile, p.DemoUsers)
	key := store + "\x00" + realm
	if o, ok := claims[key]; ok && o.sum != c.sum {
		return fmt.Errorf("realm %q: the passwordless blocks at %s and %s share a store and realm but disagree on who may sign in (%s). Give them different realms, or the same rules",
			realm, o.where, c.where, difference(o.desc, c.desc))
	}
	claims[key] = c
	return nil
}

// difference words how two rule descriptions differ; demo codes are in
// neither, so equal descriptions mean the codes differ.
func difference(a, b string) string {
	if a == b {
		return "the codes of demo_user differ"
	}
	return a + "; " + b
}

// realmEntry is one provisioned handler's claim on a realm of a store.
type realmEntry struct {
	key    string // the store's identity and the realm
	desc   string
	sum    [32]byte
	where  string
	config <-chan struct{} // Done of the config load it belongs to
}

// storeIdentity names the database behind an open store, however it was
// reached: the file's path with every symlink resolved, or for PostgreSQL
// the cluster's system identifier, the database and the schema, whatever
// the host name or parameters of the connection string. Two spellings of
// one store must not pass for two stores, or an open block would register
// users whom an invite-only one then accepts.
func storeIdentity(s Store) (string, error) {
	switch s := s.(type) {
	case *sqliteStore:
		path, err := filepath.EvalSymlinks(s.path)
		if err != nil {
			return "", fmt.Errorf("storage: %w", err)
		}
		return "sqlite\x00" + path, nil
	case *postgresStore:
		return "postgres\x00" + s.identity, nil
	}
	return "", fmt.Errorf("storage: a store of type %T", s)
}

var realms = struct {
	sync.Mutex
	m map[string][]*realmEntry
}{m: make(map[string][]*realmEntry)}

// joinRealm records this handler's sign-in rules for its store and realm,
// and fails if another handler of the same configuration has other ones.
// Handlers of an older configuration, still running during a reload, are
// not compared: the new configuration replaces them.
func (p *Passwordless) joinRealm(ctx caddy.Context) error {
	store, err := storeIdentity(p.store)
	if err != nil {
		return err
	}
	e := &realmEntry{key: store + "\x00" + p.Realm, config: ctx.Done()}
	e.desc, e.sum = signInRules(p.RegisterNewUsers, p.Allow, p.AllowFile, p.DemoUsers)
	e.where = "prefix " + p.Prefix
	realms.Lock()
	defer realms.Unlock()
	for _, o := range realms.m[e.key] {
		if o.config == e.config && o.sum != e.sum {
			return fmt.Errorf("realm %q: two passwordless handlers on one store (%s and %s) disagree on who may sign in (%s). Give them different realms, or the same rules",
				p.Realm, o.where, e.where, difference(o.desc, e.desc))
		}
	}
	realms.m[e.key] = append(realms.m[e.key], e)
	p.realmEntry = e
	return nil
}

func (p *Passwordless) leaveRealm() {
	e := p.realmEntry
	if e == nil {
		return
	}
	realms.Lock()
	defer realms.Unlock()
	realms.m[e.key] = slices.DeleteFunc(realms.m[e.key], func(o *realmEntry) bool { return o == e })
	if len(realms.m[e.key]) == 0 {
		delete(realms.m, e.key)
	}
}

// defaultRealm is the realm of blocks that name none, and of every user
// that existed before realms did.
const defaultRealm = "default"

var realmName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// aliasKey is the key of a's codes, limits and failures in this realm.
func (p *Passwordless) aliasKey(a Alias) string { return realmKey(p.Realm, a.Key()) }

func checkRealm(name string) error {
	if !realmName.MatchString(name) {
		return fmt.Errorf("realm %q: use letters, digits, and _ . - inside (at most 64)", name)
	}
	return nil
}
