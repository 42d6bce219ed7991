// Command offpeak is rekey's timer-triggered Function Compute function (runtime go1): on every
// tick it checks each watched key's primary version, and inside REKEY_WINDOW it runs due rotation
// jobs, one cluster at a time, until a margin before its deadline. The logic is in shared/handler
// (OffPeak); see functions/README.md for deployment.
package main

import (
	"os"

	"github.com/aliyun/fc-runtime-go-sdk/fc"
	"github.com/rs/zerolog"

	"github.com/rekey-dev/rekey/shared/config"
	"github.com/rekey-dev/rekey/shared/handler"
)

func main() {
	log := zerolog.New(os.Stdout).With().Timestamp().Str("function", "offpeak").Logger()
	h, err := build(&log)
	if err != nil {
		log.Error().Err(err).Msg("the function cannot start: every invocation fails with this error")
		fc.Start(handler.Failing(err))
		return
	}
	fc.Start(h.Handle)
}

func build(log *zerolog.Logger) (*handler.OffPeak, error) {
	cfg, err := config.Load(os.Getenv, config.Own{Region: os.Getenv("FC_REGION"), AccountID: os.Getenv("FC_ACCOUNT_ID")})
	if err != nil {
		return nil, err
	}
	deps, err := handler.Wire(cfg, os.Getenv, log)
	if err != nil {
		return nil, err
	}
	log.Info().Stringer("config", cfg).Msg("configuration loaded")
	return handler.NewOffPeak(deps)
}
