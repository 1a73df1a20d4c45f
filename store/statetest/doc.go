// Package statetest is the contract every implementation of the campaigns
// state interfaces (DedupLog, ProgressStore, CampaignStore, Intake) must
// pass: store/memstate always, store/redisstate against a real Redis. It owns
// the definition of "correct" for the state layer; implementations own none.
package statetest
