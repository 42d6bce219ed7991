// Command rotation is rekey's EventBridge-triggered Function Compute function (runtime go1): it
// decides what each KMS or ACK ActionTrail event means, records jobs in the watched clusters,
// sends alerts and, with REKEY_RUN_MODE=immediate, runs due jobs. The logic is in
// shared/handler (Rotation); see functions/README.md for deployment.
package main

import (
	"os"

	"github.com/aliyun/fc-runtime-go-sdk/fc"
	"github.com/rs/zerolog"

	"github.com/rekey-dev/rekey/shared/config"
	"github.com/rekey-dev/rekey/shared/handler"
)

func main() {
	log := zerolog.New(os.Stdout).With().Timestamp().Str("function", "rotation").Logger()
	h, err := build(&log)
	if err != nil {
		log.Error().Err(err).Msg("the function cannot start: every invocation fails with this error")
		fc.Start(handler.Failing(err))
		return
	}
	fc.Start(h.Handle)
}

func build(log *zerolog.Logger) (*handler.Rotation, error) {
	cfg, err := config.Load(os.Getenv, config.Own{Region: os.Getenv("FC_REGION"), AccountID: os.Getenv("FC_ACCOUNT_ID")})
	if err != nil {
		return nil, err
	}
	deps, err := handler.Wire(cfg, os.Getenv, log)
	if err != nil {
		return nil, err
	}
	log.Info().Stringer("config", cfg).Msg("configuration loaded")
	return handler.NewRotation(deps)
}
