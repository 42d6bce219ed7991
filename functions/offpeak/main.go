// Command offpeak is rekey's timer-triggered Function Compute function (runtime go1): on every
// tick it checks each watched key's primary version, and inside REKEY_WINDOW it runs due rotation
// jobs, one cluster at a time, until a margin before its deadline. The logic is in shared/handler
// (OffPeak); see functions/README.md for deployment.
package main

import (
	"github.com/aliyun/fc-runtime-go-sdk/fc"

	"github.com/rekey-dev/rekey/shared/handler"
)

func main() {
	deps, log, err := handler.FromEnv("offpeak")
	if err != nil {
		fc.Start(handler.Failing(err))
		return
	}
	h, err := handler.NewOffPeak(deps)
	if err != nil {
		log.Error().Err(err).Msg("the function cannot start: every invocation fails with this error")
		fc.Start(handler.Failing(err))
		return
	}
	fc.Start(h.Handle)
}
