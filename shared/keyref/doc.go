// Package keyref parses references to Alibaba Cloud KMS keys as users and ActionTrail write them: a key
// ID ("key-hzz6...", "3a6a031d-..."), an alias ("alias/<name>") or an ARN
// ("acs:kms:<region>:<account>:key/<id>" or "...:alias/<name>"). It performs no I/O: resolving an alias
// to a key ID is the caller's business (see Ref.Resolve).
package keyref
