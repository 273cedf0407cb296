package caddymodule

import "runtime/debug"

const modulePath = "github.com/postbackedge/caddy-postback"

// userAgent is caddy-postback/<module version>, as built into the binary.
func userAgent() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Path == modulePath && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			return "caddy-postback/" + bi.Main.Version
		}
		for _, dep := range bi.Deps {
			if dep.Path == modulePath {
				return "caddy-postback/" + dep.Version
			}
		}
	}
	return "caddy-postback/devel"
}
