package passwordless

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.uber.org/zap"
)

// The operator command line, `caddy passwordless ...`: who has access,
// inviting people, taking sessions away, lifting lockouts, without SQL.
// It reads the config as `caddy run` does and works on the same store
// through the same Store methods, so it needs no running Caddy, and a
// running one sees its changes as it sees another instance's.

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "passwordless",
		Usage: "users|sessions|passkeys|lockouts <command> [--config <path>] [--adapter <name>] [--realm <name>] [--json]",
		Short: "Manages the users and sessions of the passwordless handler",
		Long: `
Manages the users, sessions and lockouts kept by the passwordless handler,
in the store that the config names, whether Caddy is running or not.

  users add ALIAS... [--role ROLE]...   create a user (how people are invited
                                        when register_new_users is false)
  users list                            every user of the realm
  users show ALIAS|ID                   one user, its sessions and passkeys count
  users roles ALIAS|ID [ROLE...]        set its roles (none: clear them)
  users disable ALIAS|ID                end its sessions, refuse its sign-ins
  users enable ALIAS|ID                 let it sign in again
  users delete ALIAS|ID                 remove it, its aliases and sessions
  sessions list ALIAS|ID                its sessions
  sessions revoke ALIAS|ID              end every session of the user
  passkeys list ALIAS|ID                its passkeys
  passkeys delete ALIAS|ID [PASSKEY_ID] delete one passkey, or all of them
  lockouts clear ALIAS                  lift a lockout after wrong codes

An ALIAS is an email address or an E.164 number (+15551234567); an ID is
a user id as "users list" shows it.

--config is read as "caddy run" reads it (default ./Caddyfile); --adapter
names its adapter. When the config has passwordless handlers in several
realms, --realm chooses one. --json prints JSON instead of aligned text.

The command never creates a store: it fails, naming the file or database
it looked for, when the one the config names does not exist.
Exit status: 0 on success; 1, with the reason on stderr, otherwise.
`,
		CobraFunc: func(cmd *cobra.Command) {
			f := cmd.PersistentFlags()
			f.StringP("config", "c", "Caddyfile", "Configuration file, as for caddy run")
			f.StringP("adapter", "a", "", "Name of config adapter to apply")
			f.String("realm", "", "The realm to work on, when the config has several")
			f.Bool("json", false, "Print JSON instead of text")

			// A typo in a command is an error, not a page of help.
			cmd.Args, cmd.RunE = cobra.NoArgs, showHelp
			users := commandGroup("users", "Manages users")
			add := operatorCommand("add ALIAS... [--role ROLE]...", "Creates a user with those aliases, marked verified, and prints its id", cobra.MinimumNArgs(1), cmdUsersAdd)
			// An array, split on commas here: a slice flag reads its value as
			// CSV, which silently kept "admin" of "admin\nx".
			add.Flags().StringArray("role", nil, "A role of the new user (repeatable, or comma-separated)")
			users.AddCommand(
				add,
				operatorCommand("list", "Lists the users of the realm", cobra.NoArgs, cmdUsersList),
				operatorCommand("show ALIAS|ID", "Shows a user and how many sessions it has", cobra.ExactArgs(1), cmdUsersShow),
				operatorCommand("roles ALIAS|ID [ROLE...]", "Sets a user's stored roles; none clears them", cobra.MinimumNArgs(1), cmdUsersRoles),
				operatorCommand("disable ALIAS|ID", "Ends a user's sessions and refuses its sign-ins", cobra.ExactArgs(1), cmdUsersDisable),
				operatorCommand("enable ALIAS|ID", "Lets a disabled user sign in again", cobra.ExactArgs(1), cmdUsersEnable),
				operatorCommand("delete ALIAS|ID", "Deletes a user with its aliases and sessions", cobra.ExactArgs(1), cmdUsersDelete),
			)
			sessions := commandGroup("sessions", "Manages sessions")
			sessions.AddCommand(
				operatorCommand("list ALIAS|ID", "Lists a user's sessions", cobra.ExactArgs(1), cmdSessionsList),
				operatorCommand("revoke ALIAS|ID", "Ends every session of a user", cobra.ExactArgs(1), cmdSessionsRevoke),
			)
			lockouts := commandGroup("lockouts", "Manages lockouts after wrong codes")
			lockouts.AddCommand(
				operatorCommand("clear ALIAS", "Lifts the lockout of an alias", cobra.ExactArgs(1), cmdLockoutsClear),
			)
			cmd.AddCommand(users, sessions, lockouts, passkeysCommand())
		},
	})
}

// commandGroup is a command of subcommands; given none it shows its help.
func commandGroup(use, short string) *cobra.Command {
	return &cobra.Command{Use: use, Short: short, Args: cobra.NoArgs, RunE: showHelp}
}

func showHelp(cmd *cobra.Command, _ []string) error { return cmd.Help() }

// operatorCommand makes a subcommand that runs f on the configured store.
// A failure is one line on stderr and exit status 1.
func operatorCommand(use, short string, nargs cobra.PositionalArgs, f func(op *operator, args []string) error) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		// User ids are URL-safe base64: one in 64 starts with '-', which
		// pflag would take for a flag. splitArgs reads them as arguments.
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, raw []string) error {
			cmd.SilenceErrors = true // our line instead of cobra's
			err := func() error {
				args, err := parseFlags(cmd, raw)
				if err != nil {
					return err
				}
				if help, _ := cmd.Flags().GetBool("help"); help {
					return cmd.Help()
				}
				if err := nargs(cmd, args); err != nil {
					return err
				}
				return runOperator(cmd, args, f)
			}()
			if err != nil {
				fmt.Fprintln(cmd.ErrOrStderr(), "caddy passwordless: "+strings.Join(strings.Fields(err.Error()), " "))
			}
			return err
		},
	}
}

// parseFlags sets the command's flags (its own and its parents') from raw
// and returns the arguments. A word is a flag when its name (up to "=") is
// one of the command's, whatever its value holds (--realm=x@y). Otherwise a
// word that starts with '-' is an argument (an id, or an alias when it
// holds '@'), except an unknown --name, which is a typo; "--" ends the
// flags as usual.
func parseFlags(cmd *cobra.Command, raw []string) ([]string, error) {
	cmd.InheritedFlags() // merges the parents' persistent flags into Flags
	fs := cmd.Flags()
	var flags, args []string
	for i := 0; i < len(raw); i++ {
		a := raw[i]
		var f *pflag.Flag
		switch {
		case a == "--":
			args = append(args, raw[i+1:]...)
			i = len(raw)
			continue
		case strings.HasPrefix(a, "--"):
			name, _, hasValue := strings.Cut(a[2:], "=")
			if f = fs.Lookup(name); f == nil {
				// An alias may start with "--" (--x=y@example.com is
				// an address), and so may an id; any other unknown
				// flag is a typo.
				if strings.Contains(a, "@") || looksLikeID(a) {
					args = append(args, a)
					continue
				}
				return nil, fmt.Errorf("unknown flag: --%s", name)
			}
			if hasValue {
				f = nil // nothing more to take
			}
		case len(a) == 2 && a[0] == '-' && fs.ShorthandLookup(a[1:]) != nil:
			f = fs.ShorthandLookup(a[1:])
		default:
			args = append(args, a)
			continue
		}
		flags = append(flags, a)
		if f != nil && f.NoOptDefVal == "" {
			if i+1 == len(raw) {
				return nil, fmt.Errorf("flag needs an argument: %s", a)
			}
			i++
			flags = append(flags, raw[i])
		}
	}
	if err := fs.Parse(flags); err != nil {
		return nil, err
	}
	return args, nil
}

// looksLikeID reports whether s may be an id: 16 or more characters of
// unpadded base64url, as user ids (22) and passkey ids are. One user id
// in 4,096 begins with "--"; no flag is spelled so long without a typo.
func looksLikeID(s string) bool {
	_, err := base64.RawURLEncoding.DecodeString(s)
	return len(s) >= 16 && err == nil
}

func runOperator(cmd *cobra.Command, args []string, f func(*operator, []string) error) error {
	fl := cmd.Flags()
	file, _ := fl.GetString("config")
	adapter, _ := fl.GetString("adapter")
	realm, _ := fl.GetString("realm")
	asJSON, _ := fl.GetBool("json")
	cfg, err := adaptConfig(file, adapter)
	if err != nil {
		return err
	}
	t, err := chooseStore(cfg, file, realm)
	if err != nil {
		return err
	}
	// An unreachable database fails the command instead of hanging it.
	ctx, cancel := context.WithTimeout(context.Background(), operatorTimeout)
	defer cancel()
	op := &operator{ctx: ctx, realm: t.realm, out: cmd.OutOrStdout(), json: asJSON, cmd: cmd,
		logging: cfg.Logging, handler: t.handler}
	// A client of the store, as another instance is not: no migration,
	// no purge, no checkpoints.
	store, where, release, err := t.storage.openClient(op.ctx)
	if err != nil {
		return err
	}
	defer release()
	op.where = where
	op.store = store
	return f(op, args)
}

// operatorTimeout bounds one command's work on the store.
const operatorTimeout = time.Minute

// adaptedConfig is the part of an adapted config the command reads.
type adaptedConfig struct {
	Logging json.RawMessage `json:"logging"`
	Apps    struct {
		HTTP json.RawMessage `json:"http"`
	} `json:"apps"`
}

// adaptConfig loads a config file and adapts it to JSON as `caddy run`
// does (caddycmd.LoadConfig), without that function's log lines on
// stderr, where the command writes one line only when it fails.
func adaptConfig(file, adapter string) (*adaptedConfig, error) {
	body, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w (choose one with --config)", err)
	}
	base := strings.ToLower(filepath.Base(file))
	if adapter == "" && filepath.Ext(base) != ".json" &&
		(strings.HasPrefix(base, "caddyfile") || strings.HasSuffix(base, ".caddyfile")) {
		adapter = "caddyfile"
	}
	if adapter != "" {
		a := caddyconfig.GetAdapter(adapter)
		if a == nil {
			return nil, fmt.Errorf("unrecognized config adapter: %s", adapter)
		}
		if body, _, err = a.Adapt(body, map[string]any{"filename": file}); err != nil {
			return nil, fmt.Errorf("adapting config using %s: %v", adapter, err)
		}
	}
	cfg := new(adaptedConfig)
	if err := json.Unmarshal(body, cfg); err != nil {
		return nil, fmt.Errorf("%s is not valid JSON: %v; did you mean to use a config adapter (the --adapter flag)?", file, err)
	}
	return cfg, nil
}

// storeTarget is a store and a realm in it, as the handlers see them.
type storeTarget struct {
	storage StorageConfig
	realm   string
}

// chosenStore is the target with the config of its first handler, for
// who may sign in there (handlers of one realm agree on that).
type chosenStore struct {
	storeTarget
	handler json.RawMessage
}

// chooseStore finds the passwordless handlers of the config, wherever
// they are in the HTTP app (subroutes, error routes), resolves their
// storage as Provision does, and picks the one store and realm to work on.
func chooseStore(cfg *adaptedConfig, file, realm string) (chosenStore, error) {
	var handlers []json.RawMessage
	if len(cfg.Apps.HTTP) > 0 {
		var tree any
		dec := json.NewDecoder(bytes.NewReader(cfg.Apps.HTTP))
		dec.UseNumber() // handlers are encoded again: numbers stay as written
		if err := dec.Decode(&tree); err != nil {
			return chosenStore{}, fmt.Errorf("reading the http app of %s: %v", file, err)
		}
		collectHandlers(tree, &handlers)
	}
	if len(handlers) == 0 {
		return chosenStore{}, fmt.Errorf("no passwordless handler in %s", file)
	}
	repl := caddy.NewReplacer()
	env := func(s *string) { *s = repl.ReplaceKnown(*s, "") }
	var targets []storeTarget
	first := make(map[storeTarget]json.RawMessage)
	for _, raw := range handlers {
		var h struct {
			Storage *StorageConfig `json:"storage"`
			Realm   string         `json:"realm"`
		}
		if err := json.Unmarshal(raw, &h); err != nil {
			return chosenStore{}, fmt.Errorf("reading a passwordless handler in %s: %v", file, err)
		}
		t := storeTarget{realm: h.Realm}
		if h.Storage != nil {
			t.storage = *h.Storage
		}
		t.storage.provision(env)
		if t.realm == "" {
			t.realm = defaultRealm
		}
		if !slices.Contains(targets, t) {
			targets = append(targets, t)
			first[t] = raw
		}
	}
	var realms []string
	for _, t := range targets {
		if !slices.Contains(realms, t.realm) {
			realms = append(realms, t.realm)
		}
	}
	slices.Sort(realms)
	if realm != "" {
		targets = slices.DeleteFunc(targets, func(t storeTarget) bool { return t.realm != realm })
		if len(targets) == 0 {
			return chosenStore{}, fmt.Errorf("no realm %q in %s (it has %s)", realm, file, strings.Join(realms, ", "))
		}
	} else if len(realms) > 1 {
		return chosenStore{}, fmt.Errorf("%s has several realms (%s): choose one with --realm", file, strings.Join(realms, ", "))
	}
	if len(targets) > 1 {
		return chosenStore{}, fmt.Errorf("realm %q of %s is kept in more than one store: give each its own realm name", targets[0].realm, file)
	}
	return chosenStore{targets[0], first[targets[0]]}, nil
}

// collectHandlers appends every object of tree that is a passwordless
// handler.
func collectHandlers(tree any, out *[]json.RawMessage) {
	switch v := tree.(type) {
	case map[string]any:
		if v["handler"] == "passwordless" {
			b, _ := json.Marshal(v)
			*out = append(*out, b)
			return
		}
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys) // the same order on every run
		for _, k := range keys {
			collectHandlers(v[k], out)
		}
	case []any:
		for _, e := range v {
			collectHandlers(e, out)
		}
	}
}

// operator is one run of a command on one store and realm.
type operator struct {
	ctx     context.Context
	cmd     *cobra.Command
	store   Store
	realm   string
	where   string // the database, for messages
	out     io.Writer
	json    bool
	logging json.RawMessage
	handler json.RawMessage // the config of a handler of the realm
	auditor auditor         // opened at the first change
}

// accessControl reads who may sign in, and with which roles, as the
// handlers of the realm do (allow, allow_file, demo_user).
func (op *operator) accessControl() (*accessControl, error) {
	var p Passwordless
	if err := json.Unmarshal(op.handler, &p); err != nil {
		return nil, fmt.Errorf("reading the passwordless handler: %v", err)
	}
	repl := caddy.NewReplacer()
	for i := range p.DemoUsers {
		p.DemoUsers[i].Alias = repl.ReplaceKnown(p.DemoUsers[i].Alias, "")
	}
	return newAccessControl(p.Allow, repl.ReplaceKnown(p.AllowFile, ""), p.DemoUsers, zap.NewNop())
}

// audit records a change as the handler records its events, into the
// logs the config defines, so that the trail is whole whether a change
// came through the API or from this command.
func (op *operator) audit(msg string, ev auditEvent, extra ...zap.Field) {
	if op.auditor.logger == nil {
		op.auditor = auditor{openAuditLog(op.logging)}
	}
	op.auditor.record(msg, ev, append(extra, zap.String("realm", op.realm), zap.String("source", "command"))...)
}

// auditLockoutCleared is the event of `lockouts clear`, which only the
// command line makes.
const auditLockoutCleared = "lockout cleared"

// auditLoggerName names the audit logger below the module's logger:
// http.handlers.passwordless.audit, as the handler's (module.go).
const auditLoggerName = "audit"

// openAuditLog sets up Caddy's logging from the config's logging section,
// as `caddy run` would, and returns the audit logger in it.
func openAuditLog(raw json.RawMessage) *zap.Logger {
	// Caddy announces a change of the default log's writer on the old
	// one (stderr); a quiet stderr log first keeps that line off the
	// operator's terminal.
	var quiet caddy.Logging
	_ = json.Unmarshal([]byte(`{"logs": {"default": {"writer": {"output": "stderr"}, "level": "ERROR"}}}`), &quiet)
	_, _ = caddy.ProvisionContext(&caddy.Config{Logging: &quiet})
	logging := new(caddy.Logging)
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, logging); err != nil {
			caddy.Log().Error("reading the logging config; audit events go to stderr", zap.Error(err))
			logging = new(caddy.Logging)
		}
	}
	ctx, err := caddy.ProvisionContext(&caddy.Config{Logging: logging})
	if err != nil {
		// The change is made and printed; the log is what failed.
		fmt.Fprintln(os.Stderr, "caddy passwordless: opening the logs of the config:", err)
		l, _ := zap.NewProduction()
		return l.Named(string(Passwordless{}.CaddyModule().ID)).Named(auditLoggerName)
	}
	return ctx.Logger(Passwordless{}).Named(auditLoggerName)
}

// printJSON prints v as indented JSON.
func (op *operator) printJSON(v any) error {
	enc := json.NewEncoder(op.out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table prints rows under a header, aligned.
func (op *operator) table(header []string, rows [][]string) error {
	w := tabwriter.NewWriter(op.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(w, strings.Join(r, "\t"))
	}
	return w.Flush()
}

// printf prints a line of text.
func (op *operator) printf(format string, args ...any) {
	fmt.Fprintf(op.out, format+"\n", args...)
}
