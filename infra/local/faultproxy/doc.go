// Package faultproxy is a reverse proxy for tests that sits in front of a real API server and
// answers some requests with injected faults (429 with Retry-After, 503, dropped connections)
// instead of forwarding them. Faults are chosen deterministically by counting matching requests.
package faultproxy
