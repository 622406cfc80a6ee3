"""Research code for the ACIC 2016 benchmark (issue 6). Not part of the library API."""
