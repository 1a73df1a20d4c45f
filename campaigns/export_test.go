package campaigns

// ChooseWinner is chooseWinner, for the tests of the winner phase.
var ChooseWinner = chooseWinner
