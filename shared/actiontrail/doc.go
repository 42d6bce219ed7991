// Package actiontrail decodes Alibaba Cloud ActionTrail records (the data of EventBridge
// "ActionTrail" events and the entries LookupEvents returns) and looks records up through the
// ActionTrail API (LookupEvents, version 2020-07-06).
package actiontrail
