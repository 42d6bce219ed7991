package keyref

import (
	"errors"
	"fmt"
	"strings"
)

// AliasPrefix starts every KMS alias.
const AliasPrefix = "alias/"

// maxLen bounds a reference (KMS allows aliases of up to 255 characters; an ARN adds region and account).
const maxLen = 512

// Ref is a parsed key reference. Exactly one of ID and Alias is set.
type Ref struct {
	// ID is the key ID when the reference names the key itself.
	ID string
	// Alias is "alias/<name>" when the reference is an alias.
	Alias string
	// Region and Account are set when the reference was an ARN.
	Region, Account string
}

// Parse parses a key ID, an alias or an ARN. Surrounding spaces are not accepted.
func Parse(s string) (Ref, error) {
	if s == "" {
		return Ref{}, errors.New("key reference is empty")
	}
	if len(s) > maxLen {
		return Ref{}, fmt.Errorf("key reference is %d characters long, more than %d", len(s), maxLen)
	}
	if strings.HasPrefix(s, "acs:") {
		return parseARN(s)
	}
	return parseLocal(s)
}

func parseARN(s string) (Ref, error) {
	// acs:kms:<region>:<account>:<resource>
	parts := strings.SplitN(s, ":", 5)
	if len(parts) != 5 || parts[1] != "kms" {
		return Ref{}, errors.New(`key ARN must look like "acs:kms:<region>:<account>:key/<id>" or "...:alias/<name>"`)
	}
	region, account := parts[2], parts[3]
	if !validRegion(region) {
		return Ref{}, fmt.Errorf("key ARN region %q is not a region ID such as cn-hangzhou", region)
	}
	if !validAccount(account) {
		return Ref{}, fmt.Errorf("key ARN account %q is not a numeric account ID", account)
	}
	res := parts[4]
	var r Ref
	switch {
	case strings.HasPrefix(res, "key/"):
		id := strings.TrimPrefix(res, "key/")
		if !validID(id) {
			return Ref{}, fmt.Errorf("key ARN key ID %q: want letters, digits, '-' and '_'", id)
		}
		r.ID = id
	case strings.HasPrefix(res, AliasPrefix):
		if !validAlias(res) {
			return Ref{}, fmt.Errorf("key ARN alias %q: want alias/ then letters, digits, '_', '-' or '/'", res)
		}
		r.Alias = res
	default:
		return Ref{}, fmt.Errorf("key ARN resource %q: want key/<id> or alias/<name>", res)
	}
	r.Region, r.Account = region, account
	return r, nil
}

func parseLocal(s string) (Ref, error) {
	if strings.HasPrefix(s, AliasPrefix) {
		if !validAlias(s) {
			return Ref{}, fmt.Errorf("alias %q: want alias/ then letters, digits, '_', '-' or '/'", s)
		}
		return Ref{Alias: s}, nil
	}
	if !validID(s) {
		return Ref{}, fmt.Errorf("key ID %q: want letters, digits, '-' and '_' (or alias/<name>, or an acs:kms: ARN)", s)
	}
	return Ref{ID: s}, nil
}

// String returns the reference without its ARN part: the key ID or "alias/<name>".
func (r Ref) String() string {
	if r.Alias != "" {
		return r.Alias
	}
	return r.ID
}

// IsARN reports whether the reference was given as an ARN.
func (r Ref) IsARN() bool { return r.Region != "" }

// Resolve returns the key ID the reference names when it is known: the ID itself, or the ID aliases maps
// the alias to ("alias/<name>" -> key ID). Otherwise it returns the alias.
func (r Ref) Resolve(aliases map[string]string) string {
	if r.ID != "" {
		return r.ID
	}
	if id := aliases[r.Alias]; id != "" {
		return id
	}
	return r.Alias
}

// Same reports whether r and o name the same key, as far as can be told without asking KMS: equal IDs,
// equal aliases, or an alias that aliases maps to the other's ID. ARN region and account are not
// compared (check them separately).
func (r Ref) Same(o Ref, aliases map[string]string) bool {
	return r.Resolve(aliases) == o.Resolve(aliases)
}

func validID(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, c := range s {
		if !(isAlnum(c) || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func validAlias(s string) bool {
	name := strings.TrimPrefix(s, AliasPrefix)
	if name == "" || len(name) > 255 {
		return false
	}
	for _, c := range name {
		if !(isAlnum(c) || c == '-' || c == '_' || c == '/') {
			return false
		}
	}
	return true
}

func validRegion(s string) bool {
	if len(s) < 4 || len(s) > 64 || !strings.Contains(s, "-") {
		return false
	}
	for _, c := range s {
		if !((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-') {
			return false
		}
	}
	return true
}

func validAccount(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func isAlnum(c rune) bool {
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}

// ValidRegion reports whether s looks like an Alibaba Cloud region ID (lower-case letters, digits and
// '-', e.g. cn-hangzhou).
func ValidRegion(s string) bool { return validRegion(s) }

// ValidAccount reports whether s looks like an Alibaba Cloud account ID (digits only).
func ValidAccount(s string) bool { return validAccount(s) }
