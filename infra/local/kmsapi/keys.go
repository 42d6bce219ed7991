package kmsapi

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"
)

// Limits of the KMS API that the server enforces.
const (
	maxPlaintextBytes  = 6 * 1024
	maxDescriptionLen  = 8192
	maxDataKeyBytes    = 1024
	minPendingWindow   = 7
	maxPendingWindow   = 366
	keyUsageEncDec     = "ENCRYPT/DECRYPT"
	originKMS          = "Aliyun_KMS"
	defaultKeySpec     = "Aliyun_AES_256"
	defaultProtection  = "SOFTWARE"
	rotationEnabled    = "Enabled"
	rotationDisabled   = "Disabled"
	rotationSuspended  = "Suspended"
	deletionProtection = "Disabled"
)

// kmsActions are the KMS 2016-01-20 actions the server implements.
var kmsActions = map[string]handler{
	"CreateKey":            (*call).createKey,
	"DescribeKey":          (*call).describeKey,
	"ListKeys":             (*call).listKeys,
	"CreateKeyVersion":     (*call).createKeyVersion,
	"ListKeyVersions":      (*call).listKeyVersions,
	"DescribeKeyVersion":   (*call).describeKeyVersion,
	"UpdateRotationPolicy": (*call).updateRotationPolicy,
	"EnableKey":            (*call).enableKey,
	"DisableKey":           (*call).disableKey,
	"ScheduleKeyDeletion":  (*call).scheduleKeyDeletion,
	"CancelKeyDeletion":    (*call).cancelKeyDeletion,
	"Encrypt":              (*call).encrypt,
	"Decrypt":              (*call).decrypt,
	"GenerateDataKey":      (*call).generateDataKey,
	"CreateAlias":          (*call).createAlias,
	"ListAliases":          (*call).listAliases,
}

// Wire shapes, named and tagged as the services/kms response structs expect.

type keyMetadataJSON struct {
	KeyID              string `json:"KeyId"`
	Arn                string `json:"Arn"`
	KeyState           string `json:"KeyState"`
	KeyUsage           string `json:"KeyUsage"`
	KeySpec            string `json:"KeySpec"`
	ProtectionLevel    string `json:"ProtectionLevel"`
	Origin             string `json:"Origin"`
	CreationDate       string `json:"CreationDate"`
	Creator            string `json:"Creator"`
	Description        string `json:"Description"`
	PrimaryKeyVersion  string `json:"PrimaryKeyVersion"`
	AutomaticRotation  string `json:"AutomaticRotation"`
	RotationInterval   string `json:"RotationInterval,omitempty"`
	LastRotationDate   string `json:"LastRotationDate,omitempty"`
	NextRotationDate   string `json:"NextRotationDate,omitempty"`
	DeleteDate         string `json:"DeleteDate,omitempty"`
	DeletionProtection string `json:"DeletionProtection"`
}

type keyMetadataResponse struct {
	KeyMetadata keyMetadataJSON `json:"KeyMetadata"`
}

type keyVersionJSON struct {
	KeyID        string `json:"KeyId"`
	KeyVersionID string `json:"KeyVersionId"`
	CreationDate string `json:"CreationDate"`
}

type pageJSON struct {
	PageNumber int `json:"PageNumber"`
	PageSize   int `json:"PageSize"`
	TotalCount int `json:"TotalCount"`
}

func (s *Server) arn(kind, id string) string {
	return "acs:kms:" + s.opts.Region + ":" + s.opts.AccountID + ":" + kind + "/" + id
}

func (s *Server) metadata(k *key) keyMetadataJSON {
	m := keyMetadataJSON{
		KeyID:              k.ID,
		Arn:                s.arn("key", k.ID),
		KeyState:           k.State,
		KeyUsage:           k.KeyUsage,
		KeySpec:            k.KeySpec,
		ProtectionLevel:    k.ProtectionLevel,
		Origin:             k.Origin,
		CreationDate:       formatTime(k.Created),
		Creator:            k.Creator,
		Description:        k.Description,
		PrimaryKeyVersion:  k.Primary,
		AutomaticRotation:  rotationDisabled,
		LastRotationDate:   formatTime(k.LastRotation),
		DeletionProtection: deletionProtection,
	}
	if k.AutoRotation {
		m.AutomaticRotation = rotationEnabled
		if k.State != stateEnabled {
			m.AutomaticRotation = rotationSuspended
		}
		m.RotationInterval = formatRotationInterval(k.RotationInterval)
		m.NextRotationDate = formatTime(k.nextRotation())
	}
	if k.State == statePendingDeletion {
		m.DeleteDate = formatTime(k.DeleteDate)
	}
	return m
}

func versionJSON(k *key, v *keyVersion) keyVersionJSON {
	return keyVersionJSON{KeyID: k.ID, KeyVersionID: v.ID, CreationDate: formatTime(v.Created)}
}

// resolveKey finds the key a KeyId parameter names: a key ID, an alias
// ("alias/<name>") or an ARN ("acs:kms:<region>:<account>:key/<id>" or
// ":alias/<name>").
func (c *call) resolveKey(ref string) (*key, *apiError) {
	st := c.s.st
	if rest, ok := strings.CutPrefix(ref, "acs:kms:"); ok {
		parts := strings.SplitN(rest, ":", 3)
		if len(parts) != 3 || parts[0] != c.s.opts.Region || parts[1] != c.s.opts.AccountID {
			return nil, errKeyNotFound()
		}
		switch {
		case strings.HasPrefix(parts[2], "key/"):
			ref = strings.TrimPrefix(parts[2], "key/")
		case strings.HasPrefix(parts[2], "alias/"):
			ref = parts[2]
		default:
			return nil, errKeyNotFound()
		}
	}
	if strings.HasPrefix(ref, "alias/") {
		id, ok := st.Aliases[ref]
		if !ok {
			return nil, errAliasNotFound()
		}
		ref = id
	}
	k := st.key(ref)
	if k == nil {
		return nil, errKeyNotFound()
	}
	c.resourceID = k.ID
	return k, nil
}

// keyParam resolves the required KeyId parameter.
func (c *call) keyParam() (*key, *apiError) {
	ref, aerr := c.p.required("KeyId")
	if aerr != nil {
		return nil, aerr
	}
	return c.resolveKey(ref)
}

// usable refuses cryptographic use of a key that is not Enabled.
func usable(k *key) *apiError {
	switch k.State {
	case stateDisabled:
		return errKeyDisabled()
	case statePendingDeletion:
		return errKeyPendingDeletion()
	}
	return nil
}

func (c *call) setElements(kv ...string) {
	c.elements = map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		c.elements[kv[i]] = kv[i+1]
	}
}

type newKeyInput struct {
	description, spec, protection, creator string
	autoRotation                           bool
	interval                               time.Duration
}

// newKeyLocked creates an Enabled key with its first version. s.mu must be held.
func (s *Server) newKeyLocked(now time.Time, in newKeyInput) (*key, error) {
	id, err := newUUID()
	if err != nil {
		return nil, err
	}
	k := &key{
		ID:               id,
		Description:      in.description,
		KeySpec:          in.spec,
		KeyUsage:         keyUsageEncDec,
		ProtectionLevel:  in.protection,
		Origin:           originKMS,
		Creator:          in.creator,
		State:            stateEnabled,
		Created:          now.UTC(),
		AutoRotation:     in.autoRotation,
		RotationInterval: in.interval,
	}
	if _, err := k.addVersion(now); err != nil {
		return nil, err
	}
	s.st.Keys = append(s.st.Keys, k)
	return k, nil
}

func (c *call) createKey() (any, *apiError) {
	in := newKeyInput{
		description: c.p["Description"],
		spec:        c.p["KeySpec"],
		protection:  c.p["ProtectionLevel"],
		creator:     c.cred.Identity.AccountID,
	}
	if len(in.description) > maxDescriptionLen {
		return nil, errInvalidParameter("Description")
	}
	switch in.spec {
	case "":
		in.spec = defaultKeySpec
	case "Aliyun_AES_256", "Aliyun_AES_128", "Aliyun_AES_192":
	default:
		return nil, errInvalidParameterf("KeySpec", "kms-local supports Aliyun_AES_256, Aliyun_AES_192 and Aliyun_AES_128")
	}
	if u := c.p["KeyUsage"]; u != "" && u != keyUsageEncDec {
		return nil, errInvalidParameter("KeyUsage")
	}
	if o := c.p["Origin"]; o != "" && o != originKMS {
		return nil, errInvalidParameterf("Origin", "kms-local supports only Aliyun_KMS")
	}
	switch in.protection {
	case "":
		in.protection = defaultProtection
	case "SOFTWARE", "HSM":
	default:
		return nil, errInvalidParameter("ProtectionLevel")
	}
	auto, _, aerr := c.p.boolean("EnableAutomaticRotation")
	if aerr != nil {
		return nil, aerr
	}
	if auto {
		raw, aerr := c.p.required("RotationInterval")
		if aerr != nil {
			return nil, aerr
		}
		d, ok := parseRotationInterval(raw)
		if !ok {
			return nil, errInvalidParameter("RotationInterval")
		}
		in.autoRotation, in.interval = true, d
	}
	k, err := c.s.newKeyLocked(c.now, in)
	if err != nil {
		return nil, errInternal()
	}
	c.dirty = true
	c.resourceID = k.ID
	c.setElements("KeyId", k.ID, "KeyVersionId", k.Primary)
	return keyMetadataResponse{KeyMetadata: c.s.metadata(k)}, nil
}

func (c *call) describeKey() (any, *apiError) {
	k, aerr := c.keyParam()
	if aerr != nil {
		return nil, aerr
	}
	c.setElements("KeyId", k.ID)
	return keyMetadataResponse{KeyMetadata: c.s.metadata(k)}, nil
}

// keyFilter is one entry of the ListKeys Filters parameter.
type keyFilter struct {
	Key    string   `json:"Key"`
	Values []string `json:"Values"`
}

func (c *call) listKeys() (any, *apiError) {
	pg, aerr := c.p.page()
	if aerr != nil {
		return nil, aerr
	}
	var filters []keyFilter
	if raw := c.p["Filters"]; raw != "" {
		if err := json.Unmarshal([]byte(raw), &filters); err != nil {
			return nil, errInvalidParameter("Filters")
		}
		for _, f := range filters {
			if f.Key != "KeyState" && f.Key != "KeySpec" {
				return nil, errInvalidParameterf("Filters", "kms-local filters on KeyState and KeySpec only")
			}
		}
	}
	type keyJSON struct {
		KeyID  string `json:"KeyId"`
		KeyArn string `json:"KeyArn"`
	}
	var all []keyJSON
	for _, k := range c.s.st.Keys {
		match := true
		for _, f := range filters {
			field := k.State
			if f.Key == "KeySpec" {
				field = k.KeySpec
			}
			match = match && slices.Contains(f.Values, field)
		}
		if match {
			all = append(all, keyJSON{KeyID: k.ID, KeyArn: c.s.arn("key", k.ID)})
		}
	}
	lo, hi := pg.bounds(len(all))
	return struct {
		pageJSON
		Keys struct {
			Key []keyJSON `json:"Key"`
		} `json:"Keys"`
	}{
		pageJSON: pageJSON{PageNumber: pg.number, PageSize: pg.size, TotalCount: len(all)},
		Keys: struct {
			Key []keyJSON `json:"Key"`
		}{Key: nonNil(all[lo:hi])},
	}, nil
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func (c *call) createKeyVersion() (any, *apiError) {
	k, aerr := c.keyParam()
	if aerr != nil {
		return nil, aerr
	}
	if aerr := usable(k); aerr != nil {
		return nil, aerr
	}
	if gap := c.s.opts.MinVersionInterval; gap > 0 && c.now.Before(k.LastRotation.Add(gap)) {
		return nil, newAPIError(http.StatusBadRequest, CodeLimitExceeded,
			"The request was rejected because the minimum interval between key versions has not elapsed.")
	}
	v, err := k.addVersion(c.now)
	if err != nil {
		return nil, errInternal()
	}
	c.dirty = true
	c.setElements("KeyId", k.ID, "KeyVersionId", v.ID)
	return struct {
		KeyVersion keyVersionJSON `json:"KeyVersion"`
	}{versionJSON(k, v)}, nil
}

func (c *call) listKeyVersions() (any, *apiError) {
	k, aerr := c.keyParam()
	if aerr != nil {
		return nil, aerr
	}
	pg, aerr := c.p.page()
	if aerr != nil {
		return nil, aerr
	}
	lo, hi := pg.bounds(len(k.Versions))
	versions := make([]keyVersionJSON, 0, hi-lo)
	for _, v := range k.Versions[lo:hi] {
		versions = append(versions, versionJSON(k, v))
	}
	c.setElements("KeyId", k.ID)
	return struct {
		pageJSON
		KeyVersions struct {
			KeyVersion []keyVersionJSON `json:"KeyVersion"`
		} `json:"KeyVersions"`
	}{
		pageJSON: pageJSON{PageNumber: pg.number, PageSize: pg.size, TotalCount: len(k.Versions)},
		KeyVersions: struct {
			KeyVersion []keyVersionJSON `json:"KeyVersion"`
		}{KeyVersion: versions},
	}, nil
}

func (c *call) describeKeyVersion() (any, *apiError) {
	k, aerr := c.keyParam()
	if aerr != nil {
		return nil, aerr
	}
	vid, aerr := c.p.required("KeyVersionId")
	if aerr != nil {
		return nil, aerr
	}
	v := k.version(vid)
	if v == nil {
		return nil, errKeyVersionNotFound()
	}
	c.setElements("KeyId", k.ID, "KeyVersionId", v.ID)
	return struct {
		KeyVersion keyVersionJSON `json:"KeyVersion"`
	}{versionJSON(k, v)}, nil
}

func (c *call) updateRotationPolicy() (any, *apiError) {
	k, aerr := c.keyParam()
	if aerr != nil {
		return nil, aerr
	}
	enable, present, aerr := c.p.boolean("EnableAutomaticRotation")
	if aerr != nil {
		return nil, aerr
	}
	if !present {
		return nil, errMissingParameter("EnableAutomaticRotation")
	}
	if k.State == statePendingDeletion {
		return nil, errKeyPendingDeletion()
	}
	if !enable {
		k.AutoRotation, k.RotationInterval = false, 0
		c.dirty = true
		c.setElements("KeyId", k.ID)
		return struct{}{}, nil
	}
	raw, aerr := c.p.required("RotationInterval")
	if aerr != nil {
		return nil, aerr
	}
	d, ok := parseRotationInterval(raw)
	if !ok {
		return nil, errInvalidParameterf("RotationInterval", "want 7 to 730 days, e.g. 604800s or 7d")
	}
	k.AutoRotation, k.RotationInterval = true, d
	c.dirty = true
	c.setElements("KeyId", k.ID)
	return struct{}{}, nil
}

func (c *call) enableKey() (any, *apiError) { return c.setKeyState(stateEnabled) }

func (c *call) disableKey() (any, *apiError) { return c.setKeyState(stateDisabled) }

// setKeyState moves the key named by KeyId to state; a key pending deletion must first be
// cancelled.
func (c *call) setKeyState(state string) (any, *apiError) {
	k, aerr := c.keyParam()
	if aerr != nil {
		return nil, aerr
	}
	if k.State == statePendingDeletion {
		return nil, errKeyPendingDeletion()
	}
	k.State = state
	c.dirty = true
	c.setElements("KeyId", k.ID)
	return struct{}{}, nil
}

func (c *call) scheduleKeyDeletion() (any, *apiError) {
	k, aerr := c.keyParam()
	if aerr != nil {
		return nil, aerr
	}
	if _, aerr := c.p.required("PendingWindowInDays"); aerr != nil {
		return nil, aerr
	}
	days, aerr := c.p.intInRange("PendingWindowInDays", 0, minPendingWindow, maxPendingWindow)
	if aerr != nil {
		return nil, aerr
	}
	if k.State == statePendingDeletion {
		return nil, errKeyPendingDeletion()
	}
	k.State = statePendingDeletion
	k.DeleteDate = c.now.UTC().Add(time.Duration(days) * 24 * time.Hour)
	c.dirty = true
	c.setElements("KeyId", k.ID)
	return struct{}{}, nil
}

func (c *call) cancelKeyDeletion() (any, *apiError) {
	k, aerr := c.keyParam()
	if aerr != nil {
		return nil, aerr
	}
	if k.State != statePendingDeletion {
		return nil, errStateModifiedFailed()
	}
	k.State, k.DeleteDate = stateEnabled, time.Time{}
	c.dirty = true
	c.setElements("KeyId", k.ID)
	return struct{}{}, nil
}

// cryptoResponse is the Encrypt, Decrypt and GenerateDataKey response.
type cryptoResponse struct {
	KeyID          string `json:"KeyId"`
	KeyVersionID   string `json:"KeyVersionId"`
	CiphertextBlob string `json:"CiphertextBlob,omitempty"`
	Plaintext      string `json:"Plaintext,omitempty"`
}

// contextParam canonicalises the optional EncryptionContext parameter.
func (c *call) contextParam() ([]byte, *apiError) {
	ctx, err := canonicalContext(c.p["EncryptionContext"])
	if err != nil {
		return nil, errInvalidParameterf("EncryptionContext", "want a JSON object of string values")
	}
	return ctx, nil
}

// seal encrypts plaintext under the key's primary version.
func (c *call) seal(k *key, plaintext, ctx []byte) (cryptoResponse, *apiError) {
	v := k.primary()
	b, err := sealBlob(k.ID, v.ID, v.Material, plaintext, ctx)
	if err != nil {
		return cryptoResponse{}, errInternal()
	}
	c.setElements("KeyId", k.ID, "KeyVersionId", v.ID)
	return cryptoResponse{KeyID: k.ID, KeyVersionID: v.ID, CiphertextBlob: base64.StdEncoding.EncodeToString(b)}, nil
}

// encrypt seals the Plaintext parameter exactly as given, so Decrypt returns
// the same string (callers conventionally pass base64).
func (c *call) encrypt() (any, *apiError) {
	ref, aerr := c.p.required("KeyId")
	if aerr != nil {
		return nil, aerr
	}
	pt, aerr := c.p.required("Plaintext")
	if aerr != nil {
		return nil, aerr
	}
	if len(pt) > maxPlaintextBytes {
		return nil, errInvalidParameterf("Plaintext", "longer than %d bytes", maxPlaintextBytes)
	}
	ctx, aerr := c.contextParam()
	if aerr != nil {
		return nil, aerr
	}
	k, aerr := c.resolveKey(ref)
	if aerr != nil {
		return nil, aerr
	}
	if aerr := usable(k); aerr != nil {
		return nil, aerr
	}
	return c.seal(k, []byte(pt), ctx)
}

func (c *call) decrypt() (any, *apiError) {
	raw, aerr := c.p.required("CiphertextBlob")
	if aerr != nil {
		return nil, aerr
	}
	data, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		return nil, errInvalidParameter("CiphertextBlob")
	}
	bl, err := decodeBlob(data)
	if err != nil {
		return nil, errInvalidParameter("CiphertextBlob")
	}
	ctx, aerr := c.contextParam()
	if aerr != nil {
		return nil, aerr
	}
	k := c.s.st.key(bl.keyID)
	if k == nil {
		return nil, errKeyNotFound()
	}
	c.resourceID = k.ID
	if aerr := usable(k); aerr != nil {
		return nil, aerr
	}
	v := k.version(bl.versionID)
	if v == nil {
		return nil, errKeyVersionNotFound()
	}
	pt, err := bl.open(v.Material, ctx)
	if err != nil {
		// A tampered blob and a wrong EncryptionContext are indistinguishable.
		return nil, errInvalidParameter("CiphertextBlob")
	}
	c.setElements("KeyId", k.ID, "KeyVersionId", v.ID)
	return cryptoResponse{KeyID: k.ID, KeyVersionID: v.ID, Plaintext: string(pt)}, nil
}

// generateDataKey makes a random data key. The blob seals the key's base64
// text, so Decrypt of the blob returns exactly the Plaintext answered here.
func (c *call) generateDataKey() (any, *apiError) {
	ref, aerr := c.p.required("KeyId")
	if aerr != nil {
		return nil, aerr
	}
	n := 32
	switch c.p["KeySpec"] {
	case "", "AES_256":
	case "AES_128":
		n = 16
	default:
		return nil, errInvalidParameter("KeySpec")
	}
	n, aerr = c.p.intInRange("NumberOfBytes", n, 1, maxDataKeyBytes)
	if aerr != nil {
		return nil, aerr
	}
	ctx, aerr := c.contextParam()
	if aerr != nil {
		return nil, aerr
	}
	k, aerr := c.resolveKey(ref)
	if aerr != nil {
		return nil, aerr
	}
	if aerr := usable(k); aerr != nil {
		return nil, aerr
	}
	dk := make([]byte, n)
	if _, err := io.ReadFull(rand.Reader, dk); err != nil {
		return nil, errInternal()
	}
	pt := base64.StdEncoding.EncodeToString(dk)
	resp, aerr := c.seal(k, []byte(pt), ctx)
	if aerr != nil {
		return nil, aerr
	}
	resp.Plaintext = pt
	return resp, nil
}

// validAliasName reports whether name is "alias/" followed by 1 to 249
// letters, digits, '_', '-', '/' or ':'.
func validAliasName(name string) bool {
	rest, ok := strings.CutPrefix(name, "alias/")
	if !ok || rest == "" || len(name) > 255 {
		return false
	}
	for _, r := range rest {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9',
			r == '_', r == '-', r == '/', r == ':':
		default:
			return false
		}
	}
	return true
}

func (c *call) createAlias() (any, *apiError) {
	name, aerr := c.p.required("AliasName")
	if aerr != nil {
		return nil, aerr
	}
	k, aerr := c.keyParam()
	if aerr != nil {
		return nil, aerr
	}
	if !validAliasName(name) {
		return nil, errInvalidParameter("AliasName")
	}
	if _, exists := c.s.st.Aliases[name]; exists {
		return nil, newAPIError(http.StatusBadRequest, CodeAliasAlreadyExists, "AliasName Already Exists.")
	}
	if k.State == statePendingDeletion {
		return nil, errKeyPendingDeletion()
	}
	c.s.st.Aliases[name] = k.ID
	c.dirty = true
	c.setElements("KeyId", k.ID)
	return struct{}{}, nil
}

func (c *call) listAliases() (any, *apiError) {
	pg, aerr := c.p.page()
	if aerr != nil {
		return nil, aerr
	}
	type aliasJSON struct {
		AliasName string `json:"AliasName"`
		AliasArn  string `json:"AliasArn"`
		KeyID     string `json:"KeyId"`
	}
	names := slices.Sorted(maps.Keys(c.s.st.Aliases))
	lo, hi := pg.bounds(len(names))
	out := make([]aliasJSON, 0, hi-lo)
	for _, n := range names[lo:hi] {
		out = append(out, aliasJSON{AliasName: n, AliasArn: c.s.arn("alias", strings.TrimPrefix(n, "alias/")), KeyID: c.s.st.Aliases[n]})
	}
	return struct {
		pageJSON
		Aliases struct {
			Alias []aliasJSON `json:"Alias"`
		} `json:"Aliases"`
	}{
		pageJSON: pageJSON{PageNumber: pg.number, PageSize: pg.size, TotalCount: len(names)},
		Aliases: struct {
			Alias []aliasJSON `json:"Alias"`
		}{Alias: out},
	}, nil
}
