"""What grading leaves for people: the results (``results``), the tables and CSVs
(``tables``), the class report (``report``) and the feedback's last check (``feedback``)."""
