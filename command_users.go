package passwordless

import "errors"

// Pending the store's admin methods (issue 9).
var errPending = errors.New("not built yet")

func cmdUsersAdd(op *operator, args []string) error       { return errPending }
func cmdUsersList(op *operator, args []string) error      { return errPending }
func cmdUsersShow(op *operator, args []string) error      { return errPending }
func cmdUsersRoles(op *operator, args []string) error     { return errPending }
func cmdUsersDisable(op *operator, args []string) error   { return errPending }
func cmdUsersEnable(op *operator, args []string) error    { return errPending }
func cmdUsersDelete(op *operator, args []string) error    { return errPending }
func cmdSessionsList(op *operator, args []string) error   { return errPending }
func cmdSessionsRevoke(op *operator, args []string) error { return errPending }
