import sys

from autograder.course import main

sys.exit(main())
