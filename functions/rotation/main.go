// Command rotation is rekey's EventBridge-triggered Function Compute function (runtime go1): it
// decides what each KMS or ACK ActionTrail event means, records jobs in the watched clusters,
// sends alerts and, with REKEY_RUN_MODE=immediate, runs due jobs. The logic is in
// shared/handler (Rotation); see functions/README.md for deployment.
package main

import (
	"github.com/aliyun/fc-runtime-go-sdk/fc"

	"github.com/rekey-dev/rekey/shared/handler"
)

func main() {
	deps, log, err := handler.FromEnv("rotation")
	if err != nil {
		fc.Start(handler.Failing(err))
		return
	}
	h, err := handler.NewRotation(deps)
	if err != nil {
		log.Error().Err(err).Msg("the function cannot start: every invocation fails with this error")
		fc.Start(handler.Failing(err))
		return
	}
	fc.Start(h.Handle)
}
