package delivery

import "github.com/postbackedge/caddy-postback/storage"

// The real store and spool plug in as they are.
var (
	_ Store   = (*storage.Store)(nil)
	_ Spooler = (*storage.Spool)(nil)
)
