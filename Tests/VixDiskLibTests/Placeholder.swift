// Replaced by the C-program tests below in the next commit.
