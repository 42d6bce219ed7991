// Package faultproxy is a reverse proxy for tests that sits in front of a real API server and
// answers some requests with injected faults (429 with Retry-After, 503, dropped connections,
// slow responses) instead of forwarding them, or forwards them and drops the answer (a lost response: the server
// applied the request, the client sees a reset). Faults are chosen deterministically by counting
// matching requests.
package faultproxy
