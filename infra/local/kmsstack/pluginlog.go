package kmsstack

import "github.com/rs/zerolog"

// pluginLogger is plugin instance i's logger: JSON lines at debug level into Options.PluginLog, so
// that a test can read everything the plugins say (the secret-hygiene suite scans it), or nil (the
// plugin's default: no log) without one. With several instances the lines carry the instance's
// index.
func (s *Stack) pluginLogger(i int) *zerolog.Logger {
	if s.opts.PluginLog == nil {
		return nil
	}
	c := zerolog.New(s.opts.PluginLog).Level(zerolog.DebugLevel).With().Timestamp().Str("component", "kms-plugin")
	if len(s.opts.Plugins) > 1 {
		c = c.Int("plugin_instance", i)
	}
	l := c.Logger()
	return &l
}
