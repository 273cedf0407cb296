package caddymodule

import (
	"fmt"

	"github.com/caddyserver/caddy/v2"
	"github.com/spf13/cobra"

	"github.com/postbackedge/caddy-postback/storage"
)

func init() {
	registerPostbackSubcommand(newRotateKeyCommand)
}

func newRotateKeyCommand() *cobra.Command {
	var dir, oldKey, newKey string
	cmd := &cobra.Command{
		Use:   "rotate-key --storage-dir <dir> --old-key <key> --new-key <key>",
		Short: "Re-encrypt the postback store's data keys with a new encryption_key (Caddy stopped)",
		Long: `
Rotates the at-rest encryption key of a postback store. Like Badger's own
"badger rotate", it rewrites the key registry that wraps the per-table data
keys; the data itself is not rewritten, so it takes a moment whatever the
store's size. Stop Caddy first (the store is locked while it runs), rotate,
set encryption_key to the new key, start Caddy.

Keys are 64 hex characters or base64 of 32 bytes, and may be placeholders
such as {env.OLD_POSTBACK_DB_KEY} or {file./etc/caddy/db.key}, so they need
not appear on the command line.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" || oldKey == "" || newKey == "" {
				return fmt.Errorf("--storage-dir, --old-key and --new-key are required")
			}
			repl := caddy.NewReplacer()
			oldK, err := parseKey(repl.ReplaceAll(oldKey, ""))
			if err != nil {
				return fmt.Errorf("--old-key: %w", err)
			}
			newK, err := parseKey(repl.ReplaceAll(newKey, ""))
			if err != nil {
				return fmt.Errorf("--new-key: %w", err)
			}
			if err := storage.RotateKey(repl.ReplaceAll(dir, ""), oldK, newK); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "rotated: %s now opens with the new key only\n", dir)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "storage-dir", "", "the postback app's storage_dir")
	cmd.Flags().StringVar(&oldKey, "old-key", "", "the current encryption_key")
	cmd.Flags().StringVar(&newKey, "new-key", "", "the new encryption_key")
	return cmd
}
