package passwordless

import (
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
)

// The passkeys of a user, for the operator: which ones exist, and taking
// one or all away (the user then signs in with a code, and may add new
// ones). Like every command, it works through the Store.

func passkeysCommand() *cobra.Command {
	group := commandGroup("passkeys", "Manages passkeys")
	group.AddCommand(
		operatorCommand("list ALIAS|ID", "Lists a user's passkeys", cobra.ExactArgs(1), cmdPasskeysList),
		operatorCommand("delete ALIAS|ID [PASSKEY_ID]", "Deletes one of a user's passkeys, or all of them", cobra.RangeArgs(1, 2), cmdPasskeysDelete),
	)
	return group
}

// passkeyCLIView is a passkey as the command shows it; never its key.
type passkeyCLIView struct {
	ID       string     `json:"id"`
	Name     string     `json:"name"`
	Created  *time.Time `json:"created"`
	LastUsed *time.Time `json:"last_used"`
	BackedUp bool       `json:"backed_up"`
}

func cmdPasskeysList(op *operator, args []string) error {
	u, err := op.findUser(args[0])
	if err != nil {
		return err
	}
	list, err := op.store.Passkeys(op.ctx, u.ID)
	if err != nil {
		return err
	}
	if op.json {
		views := make([]passkeyCLIView, 0, len(list))
		for _, pk := range list {
			views = append(views, passkeyCLIView{ID: base64.RawURLEncoding.EncodeToString(pk.ID), Name: pk.Name,
				Created: timeOrNull(pk.CreatedAt), LastUsed: timeOrNull(pk.LastUsedAt), BackedUp: pk.BackupState})
		}
		return op.printJSON(views)
	}
	rows := make([][]string, 0, len(list))
	for _, pk := range list {
		backed := "no"
		if pk.BackupState {
			backed = "yes"
		}
		rows = append(rows, []string{base64.RawURLEncoding.EncodeToString(pk.ID), pk.Name, timeText(pk.CreatedAt), timeText(pk.LastUsedAt), backed})
	}
	return op.table([]string{"ID", "NAME", "CREATED", "LAST USED", "BACKED UP"}, rows)
}

func cmdPasskeysDelete(op *operator, args []string) error {
	u, err := op.findUser(args[0])
	if err != nil {
		return err
	}
	var ids [][]byte
	if len(args) == 2 {
		id, err := base64.RawURLEncoding.DecodeString(args[1])
		if err != nil || len(id) == 0 {
			return fmt.Errorf("no passkey %s of %s", args[1], label(u))
		}
		ids = [][]byte{id}
	} else {
		list, err := op.store.Passkeys(op.ctx, u.ID)
		if err != nil {
			return err
		}
		for _, pk := range list {
			ids = append(ids, pk.ID)
		}
	}
	// One at a time, so that each deletion is audited by its id.
	deleted := make([]string, 0, len(ids))
	for _, id := range ids {
		_, err := op.store.DeletePasskey(op.ctx, u.ID, id)
		if errors.Is(err, ErrNotFound) && len(args) == 2 {
			return fmt.Errorf("no passkey %s of %s", args[1], label(u))
		}
		if err != nil && !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("deleting passkey: %w", err)
		}
		if err == nil {
			pid := base64.RawURLEncoding.EncodeToString(id)
			op.audit(auditPasskeyDeleted, auditEvent{UserID: u.ID, PasskeyID: pid})
			deleted = append(deleted, pid)
		}
	}
	if op.json {
		return op.printJSON(map[string]any{"user_id": u.ID, "deleted": deleted})
	}
	op.printf("deleted %s of %s", plural(len(deleted), "passkey"), label(u))
	return nil
}
