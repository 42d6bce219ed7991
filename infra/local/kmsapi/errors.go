package kmsapi

import (
	"fmt"
	"net/http"
)

// Error codes the server answers with. The gateway codes (signature, AccessKey,
// STS token, timestamp, unknown API) are the Alibaba Cloud OpenAPI (POP)
// gateway's; the key codes are the ones listed in the KMS API reference
// ("Common error codes"). Codes marked unconfirmed below could not be checked
// against a primary source.
const (
	// CodeMissingParameter reports a required parameter that is absent (400).
	CodeMissingParameter = "MissingParameter"
	// CodeInvalidParameter reports a parameter with an invalid value (400).
	CodeInvalidParameter = "InvalidParameter"
	// CodeParseRequest reports a request whose parameters cannot be parsed (400).
	CodeParseRequest = "ParseRequestParameterException"
	// CodeInvalidFormat reports a Format other than JSON (400).
	CodeInvalidFormat = "InvalidParameter.Format"
	// CodeActionNotFound reports an unknown Action for a known Version (404).
	CodeActionNotFound = "InvalidAction.NotFound"
	// CodeUnsupportedHTTPMethod reports a method other than GET or POST (403).
	CodeUnsupportedHTTPMethod = "UnsupportedHTTPMethod"
	// CodeAccessKeyNotFound reports an unknown AccessKeyId (404).
	CodeAccessKeyNotFound = "InvalidAccessKeyId.NotFound"
	// CodeSignatureDoesNotMatch reports a well-formed signature that does not
	// match the server's calculation (400).
	CodeSignatureDoesNotMatch = "SignatureDoesNotMatch"
	// CodeIncompleteSignature reports a signature that is not valid base64 of
	// an HMAC-SHA1 digest (400).
	CodeIncompleteSignature = "IncompleteSignature"
	// CodeInvalidSignatureMethod reports a SignatureMethod other than HMAC-SHA1 (400).
	CodeInvalidSignatureMethod = "InvalidSignatureMethod"
	// CodeIllegalTimestamp reports a missing Timestamp (400).
	CodeIllegalTimestamp = "IllegalTimestamp"
	// CodeTimestampFormat reports a Timestamp not in ISO 8601 UTC form (400).
	CodeTimestampFormat = "InvalidTimeStamp.Format"
	// CodeTimestampExpired reports a Timestamp outside Options.MaxClockSkew (400).
	CodeTimestampExpired = "InvalidTimeStamp.Expired"
	// CodeMissingSecurityToken reports an STS AccessKey used without its token (400).
	CodeMissingSecurityToken = "MissingSecurityToken"
	// CodeSecurityTokenMismatch reports a token that does not belong to the AccessKey (400).
	CodeSecurityTokenMismatch = "InvalidSecurityToken.MismatchWithAccessKey"
	// CodeSecurityTokenExpired reports an STS credential past its Expiration (403).
	CodeSecurityTokenExpired = "InvalidSecurityToken.Expired"
	// CodeKeyNotFound reports an unknown key ID or ARN (404).
	CodeKeyNotFound = "Forbidden.KeyNotFound"
	// CodeAliasNotFound reports an unknown alias (404).
	CodeAliasNotFound = "Forbidden.AliasNotFound"
	// CodeKeyVersionNotFound reports an unknown key version (404).
	CodeKeyVersionNotFound = "Forbidden.KeyVersionNotFound"
	// CodeKeyDisabled rejects an operation on a Disabled key (409).
	CodeKeyDisabled = "Rejected.Disabled"
	// CodeKeyPendingDeletion rejects an operation on a PendingDeletion key (409).
	CodeKeyPendingDeletion = "Rejected.PendingDeletion"
	// CodeStateModifiedFailed rejects a state change the key's state does not allow (409).
	CodeStateModifiedFailed = "Rejected.StateModifiedFailed"
	// CodeAliasAlreadyExists rejects CreateAlias for a name in use (400).
	CodeAliasAlreadyExists = "AliasAlreadyExists"
	// CodeLimitExceeded rejects CreateKeyVersion inside Options.MinVersionInterval
	// (400; the code for this case is unconfirmed).
	CodeLimitExceeded = "Rejected.LimitExceeded"
	// CodeInternalFailure reports a server-side failure such as an unwritable
	// state file (500).
	CodeInternalFailure = "InternalFailure"
)

// apiError is an error that is answered to the client in the Alibaba Cloud
// error shape.
type apiError struct {
	status  int
	code    string
	message string
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func newAPIError(status int, code, message string) *apiError {
	return &apiError{status: status, code: code, message: message}
}

func errMissingParameter(name string) *apiError {
	return newAPIError(http.StatusBadRequest, CodeMissingParameter,
		fmt.Sprintf("The input parameter %q that is mandatory for processing this request is not supplied.", name))
}

func errInvalidParameter(name string) *apiError {
	return newAPIError(http.StatusBadRequest, CodeInvalidParameter,
		fmt.Sprintf("The specified parameter %q is not valid.", name))
}

func errInvalidParameterf(name, format string, args ...any) *apiError {
	return newAPIError(http.StatusBadRequest, CodeInvalidParameter,
		fmt.Sprintf("The specified parameter %q is not valid: ", name)+fmt.Sprintf(format, args...))
}

func errParseRequest() *apiError {
	return newAPIError(http.StatusBadRequest, CodeParseRequest,
		"Server parse parameters exception. Please check your input params.")
}

func errActionNotFound() *apiError {
	return newAPIError(http.StatusNotFound, CodeActionNotFound,
		"Specified api is not found, please check your url and method.")
}

func errActionOrVersion() *apiError {
	return errInvalidParameter("Action or Version")
}

func errKeyNotFound() *apiError {
	return newAPIError(http.StatusNotFound, CodeKeyNotFound, "The specified Key is not found.")
}

func errAliasNotFound() *apiError {
	return newAPIError(http.StatusNotFound, CodeAliasNotFound, "The specified Alias is not found.")
}

func errKeyVersionNotFound() *apiError {
	return newAPIError(http.StatusNotFound, CodeKeyVersionNotFound, "The specified Key version is not found.")
}

func errKeyDisabled() *apiError {
	return newAPIError(http.StatusConflict, CodeKeyDisabled,
		"The request was rejected because the key state is Disabled.")
}

func errKeyPendingDeletion() *apiError {
	return newAPIError(http.StatusConflict, CodeKeyPendingDeletion,
		"The request was rejected because the key state is PendingDeletion.")
}

func errStateModifiedFailed() *apiError {
	return newAPIError(http.StatusConflict, CodeStateModifiedFailed, "Keystate modified failed.")
}

func errInternal() *apiError {
	return newAPIError(http.StatusInternalServerError, CodeInternalFailure, "Internal Failure.")
}
