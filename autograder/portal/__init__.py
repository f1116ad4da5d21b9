"""The submission portal (issue 28): students hand in a notebook and read the grader's
feedback before the deadline.

``autograder.portal.store`` is its state: a SQLite database in the course folder
(``ROOT/portal/portal.sqlite``, not nbgrader's gradebook) that holds the students' tokens
(hashed), every submission and its state, and answers the rate limit. The server and its
dispatcher (to come) grade through ``autograder.grading.driver``, so that one process alone
writes the course folder.
"""
