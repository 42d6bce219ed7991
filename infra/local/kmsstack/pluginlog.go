package kmsstack

import "github.com/rs/zerolog"

// pluginLogger is the plugin's logger: JSON lines at debug level into Options.PluginLog, so that
// a test can read everything the plugin says (the secret-hygiene suite scans it), or nil (the
// plugin's default: no log) without one.
func (s *Stack) pluginLogger() *zerolog.Logger {
	if s.opts.PluginLog == nil {
		return nil
	}
	l := zerolog.New(s.opts.PluginLog).Level(zerolog.DebugLevel).With().Timestamp().Str("component", "kms-plugin").Logger()
	return &l
}
