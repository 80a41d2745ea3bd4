from time import sleep
from mpservice.mpserver import Worker, make_worker, ProcessServlet, ThreadServlet, SequentialServlet, EnsembleServlet

class GetHead(Worker):
    def call(self, x):
        sleep(0.01)
        return x[0]

class GetTail(Worker):
    def call(self, x):
        sleep(0.011)
        return x[-1]

class GetLen(Worker):
    def call(self, x):
        sleep(0.012)
        return len(x)

class Solute(Worker):
    def call(self, x):
        return f"Hello, {x}!"

servlet = SequentialServlet(
    EnsembleServlet(
        ProcessServlet(GetHead, cpus=[0]),
        ProcessServlet(GetTail, cpus=[0, 1]),
        ProcessServlet(GetLen, cpus=[1]),
    ),
    ThreadServlet(make_worker(lambda x: (x[0] + x[1]) * x[2])),
    ProcessServlet(Solute),
)

from mpservice.mpserver import Server

server = Server(servlet)

def main():
    with server:
        x = 'world'
        y = server.call(x)
        print(y)

        x = [1, 2, 3, 4]
        y = server.call(x)
        print(y)

if __name__ == '__main__':
    main()
